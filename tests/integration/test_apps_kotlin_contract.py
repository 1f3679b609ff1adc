"""Compile the Android app's platform-independent contract code with kotlinc and check it against mpk.

The strongest check available without an Android SDK: the app's own Kotlin
(org.mpk.bench.contract: stats, accuracy, spec parsing, result writing) runs on
this JVM and must agree with runners/stats.py, runners/host_runner.py's
accuracy_metrics and the JSON Schemas. Skipped when Debian's ``kotlin`` package
(kotlinc) or a JDK is missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mpk.contract import problems as schema_problems
from runners.host_runner import accuracy_metrics
from runners.stats import LatencyStats

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "android_app/app/src/main/java/org/mpk/bench/contract").glob("*.kt")),
           ROOT / "android_app/jvm-harness/Harness.kt"]  # fmt: skip

pytestmark = pytest.mark.skipif(not (shutil.which("kotlinc") and shutil.which("java")), reason="needs kotlinc + JDK")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    jar = tmp_path_factory.mktemp("kt") / "harness.jar"
    p = subprocess.run(["kotlinc", *map(str, SOURCES), "-include-runtime", "-d", str(jar)],
                       capture_output=True, text=True, timeout=170)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]

    def call(*requests: dict) -> list:
        r = subprocess.run(["java", "-jar", str(jar)], input=json.dumps({"requests": list(requests)}),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout)
        for o in out:
            assert not (isinstance(o, dict) and "exception" in o), o
        return out

    return call


def _spec(tmp: Path, n_art: int = 2) -> Path:
    rng = np.random.default_rng(0)
    inp = rng.standard_normal((3, 1, 4)).astype("<f4")
    out = rng.standard_normal((3, 1, 10)).astype("<f4")
    (tmp / "in.bin").write_bytes(inp.tobytes())
    (tmp / "out.bin").write_bytes(out.tobytes())
    (tmp / "m.pte").write_bytes(b"x")
    sha = hashlib.sha256(b"x").hexdigest()
    spec = {
        "schema_version": "mpk.runner-spec/1", "run_id": "r1", "device_id": "pixel",
        "settings": {"threads": 2, "cpu_affinity": None, "warmup_iterations": 3, "min_iterations": 7,
                     "min_seconds": 0.0, "max_seconds": None},
        "reference": {"samples": 3, "task": "classification",
                      "inputs": [{"name": "x", "path": "in.bin", "shape": [1, 4], "dtype": "float32"}],
                      "outputs": [{"name": "y", "path": "out.bin", "shape": [1, 10], "dtype": "float32"}]},
        "artifacts": [{"id": f"executorch-{i}", "backend": "executorch", "scheme": "fp32", "path": "m.pte",
                       "sha256": sha} for i in range(n_art)],
    }  # fmt: skip
    assert schema_problems(spec, "runner_spec") == []
    (tmp / "spec.json").write_text(json.dumps(spec))
    return tmp / "spec.json"


def test_stats_match_runners_stats(harness) -> None:
    rng = np.random.default_rng(1)
    sets = [[5.0], [1.0, 2.0], [10.0] * 9 + [20.0], rng.gamma(2, 3, 37).tolist(), rng.lognormal(1, 0.3, 100).tolist(),
            rng.gamma(2, 3, 1000).tolist()]  # fmt: skip
    got = harness(*({"op": "stats", "samples": s} for s in sets))
    for samples, kt in zip(sets, got, strict=True):
        py = LatencyStats.from_samples(samples).to_dict()
        assert set(kt) == set(py)
        for k, v in py.items():
            assert kt[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (len(samples), k)
        # the CIs are order statistics: equal exactly, not approximately
        assert kt["p50_ci_ms"] == py["p50_ci_ms"] and kt["p90_ci_ms"] == py["p90_ci_ms"]


@pytest.mark.xfail(
    reason="cosine is now mpk.metrics' mean of per-sample cosines; the Kotlin port of that definition is on "
    "branch apps (which also points this test at packager.verify.compute_metrics): fixed on branch apps",
    strict=False,
)
def test_accuracy_matches_host_runner(harness) -> None:
    rng = np.random.default_rng(2)
    ref = [[rng.standard_normal((1, 10)).astype(np.float32)] for _ in range(4)]
    pred = [[(o[0] + rng.normal(0, 0.3, o[0].shape)).astype(np.float32)] for o in ref]
    req = {"op": "accuracy", "pred": [[o.ravel().tolist() for o in s] for s in pred],
           "ref": [[o.ravel().tolist() for o in s] for s in ref], "task": None, "shape": [1, 10]}  # fmt: skip
    same = {**req, "pred": req["ref"], "task": "classification"}
    kt, kt_same = harness(req, same)
    py = accuracy_metrics(pred, ref)
    for k, v in py.items():
        assert kt[k] == pytest.approx(v, rel=1e-6), k
    assert kt_same["snr_db"] == 200.0 and kt_same["cosine"] == 1.0 and kt_same["top1_agreement"] == 1.0


def test_result_json_is_schema_valid(harness, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    samples = [4.0, 4.5, 5.0, 4.2, 4.8]
    (result,) = harness({"op": "result", "spec": str(spec), "samples": samples})
    assert schema_problems(result, "runner_result") == []
    ok, err = result["artifacts"]
    assert ok["status"] == "ok"
    for k, v in LatencyStats.from_samples(samples).to_dict().items():
        assert ok["stats"][k] == (v if isinstance(v, list) else pytest.approx(v)), k
    assert ok["memory"]["rise_mb"] == pytest.approx(40.5) and ok["accuracy"]["top1_agreement"] == 1.0
    assert err["status"] == "error" and err["error"]["kind"] == "oom" and err["stats"] is None


def test_spec_problems_all_reported_and_loop_rule(harness, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    bad = json.loads(spec.read_text())
    bad["settings"]["threads"] = "four"
    bad["artifacts"][0]["backend"] = "tflite"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    good, broken, loop = harness({"op": "spec", "spec": str(spec)}, {"op": "spec", "spec": str(tmp_path / "bad.json")},
                                 {"op": "loop", "spec": str(spec), "step_ns": 1000})  # fmt: skip
    assert good["run_id"] == "r1" and good["artifacts"] == ["executorch-0", "executorch-1"]
    assert any(p.startswith("settings.threads") for p in broken["problems"])
    assert any(p.startswith("artifacts[0].backend") for p in broken["problems"])
    # first inference + 3 warm-up + min_iterations=7 timed (min_seconds=0): the host runner's rule
    assert loop == {"calls": 11, "iterations": 7, "warmup": 3}
