"""Compile the Android app's platform-independent Kotlin with kotlinc and check it against mpk, number by number.

The strongest check available without an Android SDK: everything in org.mpk.bench.contract (stats, accuracy,
spec parsing, result writing, the measuring order, the runtime-version check, sha256) runs on this JVM through
android_app/jvm-harness/Harness.kt and must agree with runners/stats.py, mpk/metrics.py,
runners/compat.py and the JSON Schemas. The runtime glue (runtime/*.kt) is compiled in the same kotlinc run
against stubs of the pinned ExecuTorch / ONNX Runtime APIs (tests/unit/test_apps_runtime_api.py builds them
from the quoted upstream declarations), so a call the pinned runtime does not have fails here.

One kotlinc invocation per source hash: the jar is cached in pytest's cache directory (kotlinc takes ~30 s).
Skipped when Debian's ``kotlin`` package (kotlinc) or a JDK is missing.
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
from mpk.metrics import compare
from runners import compat
from runners.stats import LatencyStats
from tests.integration.kotlin_build import harness_jar

pytestmark = pytest.mark.skipif(not (shutil.which("kotlinc") and shutil.which("java")), reason="needs kotlinc + JDK")


@pytest.fixture(scope="module")
def harness(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory):
    jar = harness_jar(pytestconfig, tmp_path_factory)

    def call(*requests: dict) -> list:
        r = subprocess.run(["java", "-jar", str(jar)], input=json.dumps({"requests": list(requests)}),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout)
        for o in out:
            assert not (isinstance(o, dict) and "exception" in o), o
        return out

    return call


def _spec(tmp: Path, n_art: int = 2, runtime: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    inp = rng.standard_normal((3, 1, 4)).astype("<f4")
    out = rng.standard_normal((3, 1, 10)).astype("<f4")
    (tmp / "in.bin").write_bytes(inp.tobytes())
    (tmp / "out.bin").write_bytes(out.tobytes())
    (tmp / "m.pte").write_bytes(b"x")
    sha = hashlib.sha256(b"x").hexdigest()
    arts = [{"id": f"executorch-{i}", "backend": "executorch", "scheme": "fp32", "path": "m.pte", "sha256": sha}
            for i in range(n_art)]  # fmt: skip
    if runtime:
        arts[0]["runtime"] = runtime
    spec = {
        "schema_version": "mpk.runner-spec/1", "run_id": "r1", "device_id": "pixel",
        "settings": {"threads": 2, "cpu_affinity": None, "warmup_iterations": 3, "min_iterations": 7,
                     "min_seconds": 0.0, "max_seconds": None},
        "reference": {"samples": 3, "task": "classification",
                      "inputs": [{"name": "x", "path": "in.bin", "shape": [1, 4], "dtype": "float32"}],
                      "outputs": [{"name": "y", "path": "out.bin", "shape": [1, 10], "dtype": "float32"}]},
        "artifacts": arts,
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


def _accuracy_cases() -> list[tuple[list[list[np.ndarray]], list[list[np.ndarray]]]]:
    """(pred, ref) per case, indexed [sample][output]; two outputs of different sizes per sample."""
    rng = np.random.default_rng(2)
    ref = [[rng.standard_normal((1, 10)).astype(np.float32), rng.standard_normal((1, 3)).astype(np.float32)]
           for _ in range(5)]  # fmt: skip
    noisy = [[(o + rng.normal(0, 0.3, o.shape)).astype(np.float32) for o in s] for s in ref]
    # samples of very different scale: the mean of per-sample cosines differs from one cosine over all values
    scaled_ref = [[o * (100.0 if i == 0 else 1.0) for o in s] for i, s in enumerate(ref)]
    scaled_pred = [[(o + rng.normal(0, 0.5, o.shape)).astype(np.float32) for o in s] for s in scaled_ref]
    zero = [[np.zeros((1, 10), np.float32), np.zeros((1, 3), np.float32)]]
    one_zero_pred = [[np.zeros((1, 10), np.float32), np.zeros((1, 3), np.float32)], *noisy[1:]]
    # a reference of ~1e-25 (a random-init MobileNetV2's logits) answered with zeros: 0 dB, no energy floor;
    # and a reference of zeros answered with noise: -200 dB
    tiny = [[(o * 1e-25).astype(np.float64) for o in s] for s in ref]
    tiny_zero = [[np.zeros_like(o) for o in s] for s in tiny]
    all_zero = [[np.zeros_like(o) for o in s] for s in ref]
    return [(noisy, ref), (ref, ref), (scaled_pred, scaled_ref), (zero + noisy[1:], zero + ref[1:]),
            (one_zero_pred, ref), (tiny_zero, tiny), (noisy, all_zero)]  # fmt: skip


def _stack(per_sample: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.stack([s[o] for s in per_sample]) for o in range(len(per_sample[0]))]


def test_accuracy_matches_mpk_metrics(harness) -> None:
    """The app's cosine/SNR/max error/top-1 are mpk.metrics.compare's (the one definition), for every case."""
    cases = _accuracy_cases()
    reqs = [{"op": "accuracy", "pred": [[o.ravel().tolist() for o in s] for s in pred],
             "ref": [[o.ravel().tolist() for o in s] for s in ref], "task": None, "shape": [1, 10]}
            for pred, ref in cases]  # fmt: skip
    got = harness(*reqs)
    for (pred, ref), kt in zip(cases, got, strict=True):
        py = compare(_stack(ref), _stack(pred), classifier=True)
        for k in ("cosine", "snr_db", "max_abs_error", "top1_agreement"):
            if py[k] is None:  # no clear top-1 at all (a reference of zeros): neither side invents one
                assert kt[k] is None, k
                continue
            assert kt[k] == pytest.approx(py[k], rel=1e-9, abs=1e-12), k
        assert kt["samples"] == len(ref) and kt["top1_counted"] == py["top1_counted"]
    exact, scaled, both_zero, one_zero = got[1], got[2], got[3], got[4]
    assert got[5]["snr_db"] == pytest.approx(0.0, abs=1e-9) and got[6]["snr_db"] == -200.0
    assert exact["snr_db"] == 200.0 and exact["cosine"] == pytest.approx(1.0) and exact["top1_agreement"] == 1.0
    pooled = np.concatenate([o.ravel() for s in _accuracy_cases()[2][0] for o in s]).astype(np.float64)
    pooled_ref = np.concatenate([o.ravel() for s in _accuracy_cases()[2][1] for o in s]).astype(np.float64)
    global_cos = float(pooled @ pooled_ref / np.linalg.norm(pooled) / np.linalg.norm(pooled_ref))
    assert abs(scaled["cosine"] - global_cos) > 1e-3  # the old all-values definition would not pass the check above
    assert _per_sample_cos(cases[3])[0] == 1.0 and _per_sample_cos(cases[4])[0] == 0.0  # the two zero rules
    assert both_zero["cosine"] == pytest.approx(np.mean(_per_sample_cos(cases[3])))
    assert one_zero["cosine"] == pytest.approx(np.mean(_per_sample_cos(cases[4])))


def test_top1_agreement_per_task_and_clear_margin_match_mpk_metrics(harness) -> None:
    """Top-1 agreement counts only decisions where fp32 has a clear top-1 (mpk.metrics.clear), per sample,
    per position (language-model) or per pixel (segmentation): the app's count and agreement are Python's."""
    rng = np.random.default_rng(7)
    cases = []
    # classification: near-ties (margin 0.01 std), clear ones, exact ties and a constant row
    logits = rng.standard_normal((8, 1, 6)).astype(np.float32)
    logits[0, 0] = [2.0, 1.999, 0.0, 0.0, 0.0, 0.0]  # margin 0.001, std 0.94: a near-tie
    logits[1, 0, :] = 1.0  # constant
    logits[2, 0] = [3.0, 3.0, 0.0, 0.0, 0.0, 0.0]  # exact tie
    flipped = logits.copy()
    flipped[:, 0, [0, 1]] = flipped[:, 0, [1, 0]]
    cases.append(("classification", [1, 6], logits, flipped))
    # language model: (1, T=5, V=7) per sample; noise flips some positions
    lm = rng.standard_normal((4, 1, 5, 7)).astype(np.float32)
    cases.append(("language-model", [1, 5, 7], lm, (lm + rng.normal(0, 0.4, lm.shape)).astype(np.float32)))
    # segmentation: (1, C=3, 4, 4) per sample
    seg = rng.standard_normal((3, 1, 3, 4, 4)).astype(np.float32)
    cases.append(("segmentation", [1, 3, 4, 4], seg, (seg + rng.normal(0, 0.5, seg.shape)).astype(np.float32)))
    reqs = [{"op": "accuracy", "pred": [[p.ravel().tolist()] for p in pred], "ref": [[r.ravel().tolist()] for r in ref],
             "task": task, "shape": shape} for task, shape, ref, pred in cases]  # fmt: skip
    got = harness(*reqs)
    for (task, _, ref, pred), kt in zip(cases, got, strict=True):
        py = compare([ref], [pred], task=task)
        assert kt["top1_counted"] == py["top1_counted"], task
        assert kt["top1_agreement"] == pytest.approx(py["top1_agreement"], rel=1e-12), task
        assert 0 < py["top1_counted"] < py["top1_decisions"] or task == "classification", task
    rows = cases[0][2][:, 0].astype(np.float64)
    top2 = np.sort(rows, axis=1)[:, ::-1][:, :2]
    margin = top2[:, 0] - top2[:, 1]
    independent = int(np.sum((margin > 0) & (margin >= 0.5 * rows.std(axis=1))))
    cls = compare([cases[0][2]], [cases[0][3]], task="classification")
    assert cls["top1_counted"] == independent <= 5  # the near-tie, the constant row and the exact tie are not counted


def _per_sample_cos(case: tuple[list[list[np.ndarray]], list[list[np.ndarray]]]) -> list[float]:
    out = []
    for p, r in zip(*case, strict=True):
        pv = np.concatenate([o.ravel() for o in p]).astype(np.float64)
        rv = np.concatenate([o.ravel() for o in r]).astype(np.float64)
        den = np.linalg.norm(pv) * np.linalg.norm(rv)
        out.append(float(pv @ rv / den) if den > 0 else float(not np.any(pv - rv)))
    return out


def test_result_json_is_schema_valid(harness, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    samples = [4.0, 4.5, 5.0, 4.2, 4.8]
    (result,) = harness({"op": "result", "spec": str(spec), "samples": samples})
    assert schema_problems(result, "runner_result") == []
    assert result["runner"]["runtimes"] == {"executorch": "1.4.1", "onnxruntime": "1.24.3"}
    ok, err = result["artifacts"]
    assert ok["status"] == "ok"
    for k, v in LatencyStats.from_samples(samples).to_dict().items():
        assert ok["stats"][k] == (v if isinstance(v, list) else pytest.approx(v)), k
    assert ok["memory"]["rise_mb"] == pytest.approx(40.5) and ok["accuracy"]["top1_agreement"] == 1.0
    assert result["device"]["int8_kernel"] == {"name": "avx2", "saturates": True}
    assert err["status"] == "error" and err["error"]["kind"] == "oom" and err["stats"] is None
    del result["runner"]["runtimes"]["onnxruntime"]
    assert any("onnxruntime" in p for p in schema_problems(result, "runner_result")), "apps must report both"


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


LINKED = {"executorch": "1.4.1", "onnxruntime": "1.24.3"}


def test_measuring_order_is_the_memory_definition(harness, tmp_path: Path) -> None:
    """Runtime loaded before the baseline; peak read right after the timed loop, before the accuracy pass."""
    spec = _spec(tmp_path, n_art=1, runtime={"runtime": "executorch", "min_version": "1.4.0",
                                             "file_identifier": "ET12"})  # fmt: skip
    ref = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(3, 10)
    (r,) = harness({"op": "measure", "spec": str(spec), "linked": LINKED, "outputs": [ref[0].tolist()]})
    ev = r["events"]
    assert ev[:5] == ["preload:executorch", "gc", "reset", "baseline", "open"], ev
    timed = 1 + 3 + 7  # first inference + warm-up + min_iterations
    assert ev[5 : 5 + timed] == ["run"] * timed
    assert ev[5 + timed : 5 + timed + 2] == ["peak", "pss"]
    assert ev[5 + timed + 2 :] == ["run"] * 3 + ["close"]  # the accuracy pass: one run per reference sample
    out = r["outcome"]
    assert out["status"] == "ok" and out["memory"]["baseline_rss_mb"] == 100.0 and out["memory"]["rise_mb"] == 50.0
    assert out["iterations"] == 7 and out["accuracy"]["samples"] == 3
    assert out["accuracy"]["top1_agreement"] == pytest.approx(
        compare([ref[:, None, :]], [np.stack([ref[0]] * 3)[:, None, :]], classifier=True)["top1_agreement"]
    )


def test_measuring_refuses_what_the_linked_runtime_cannot_load(harness, tmp_path: Path) -> None:
    newer = {"runtime": "executorch", "min_version": "1.5.0", "file_identifier": "ET12"}
    spec = _spec(tmp_path, n_art=1, runtime=newer)
    bad_sha = json.loads(spec.read_text())
    bad_sha["artifacts"][0]["sha256"] = "0" * 64
    del bad_sha["artifacts"][0]["runtime"]
    (tmp_path / "badsha.json").write_text(json.dumps(bad_sha))
    refused, tampered, no_lib = harness(
        {"op": "measure", "spec": str(spec), "linked": LINKED, "outputs": [[0.0] * 10]},
        {"op": "measure", "spec": str(tmp_path / "badsha.json"), "linked": LINKED, "outputs": [[0.0] * 10]},
        # a runtime that reports no version is not refused; its native library then fails to load
        {"op": "measure", "spec": str(spec), "linked": {}, "outputs": [[0.0] * 10],
         "preload_error": "dlopen failed: libexecutorch.so not found"},
    )  # fmt: skip
    assert refused["events"] == [], "nothing is loaded for an artifact the runtime cannot load"
    err = refused["outcome"]["error"]
    assert err["kind"] == "unsupported" and "1.5.0" in err["message"] and "1.4.1" in err["message"]
    assert tampered["events"] == [] and tampered["outcome"]["error"]["kind"] == "load"
    assert "sha256 mismatch" in tampered["outcome"]["error"]["message"]
    assert no_lib["events"] == ["preload:executorch"] and no_lib["outcome"]["error"]["kind"] == "load"
    assert "libexecutorch.so" in no_lib["outcome"]["error"]["message"]


def test_sha256_matches_hashlib(harness, tmp_path: Path) -> None:
    f = tmp_path / "blob.bin"
    f.write_bytes(np.random.default_rng(3).bytes(3 * 1024 * 1024 + 11))  # spans several 1 MiB reads
    (kt,) = harness({"op": "sha256", "path": str(f)})
    assert kt == hashlib.sha256(f.read_bytes()).hexdigest()


def test_app_compat_agrees_with_runners_compat(harness) -> None:
    """The app's check before loading and mpk bench's check before pushing give the same answer."""
    reqs = [
        {"runtime": "executorch", "min_version": "1.4.0", "file_identifier": "ET12"},
        {"runtime": "executorch", "min_version": "1.3.0", "file_identifier": "ET12"},
        {"runtime": "executorch", "min_version": "1.4.0", "file_identifier": "ET13"},
        {"runtime": "executorch", "min_version": None, "file_identifier": "ET12"},
        {"runtime": "onnxruntime", "min_version": "1.18", "ir_version": 10, "opsets": {"": 20, "ai.onnx.ml": 5}},
        {"runtime": "onnxruntime", "min_version": "1.14", "ir_version": 8, "opsets": {"": 18}},
        {"runtime": "onnxruntime", "min_version": None, "ir_version": 11, "opsets": {"": 23}},
    ]
    versions = {"executorch": ["1.0.0", "1.3.1", "1.4.0", "1.4.1", "1.5.0"],
                "onnxruntime": ["1.9.0", "1.14.1", "1.17.3", "1.18.0", "1.20.1", "1.24.3"]}  # fmt: skip
    cases = [{"req": r, "linked": {r["runtime"]: v}} for r in reqs for v in versions[r["runtime"]]]
    got = harness({"op": "compat", "cases": [{**c, "req": {k: c["req"][k] for k in ("runtime", "min_version")}
                                               | {"file_identifier": c["req"].get("file_identifier")}}
                                              for c in cases]})[0]  # fmt: skip
    for c, refusal in zip(cases, got, strict=True):
        verdict = compat.check(c["req"], c["linked"])
        assert (refusal is not None) == (verdict.loadable is False), (c, refusal, verdict)
    assert sum(r is not None for r in got) >= 8  # the grid exercises refusals, not only passes
    from mpk.runtimes import ORT_BUNDLED_ONNX, version_tuple

    kt = Path(__file__).resolve().parents[2] / "android_app/app/src/main/java/org/mpk/bench/contract/Compat.kt"
    newest = max(ORT_BUNDLED_ONNX, key=version_tuple).replace(".", ", ")
    assert f"NEWEST_TABULATED_ORT = intArrayOf({newest})" in kt.read_text()


def test_app_int8_kernel_facts_agree_with_mpk_hostcpu(harness) -> None:
    """The apps report the CPU's int8 features and ORT's kernel by mpk/hostcpu.py's rules (an x86 emulator
    image on a host without VNNI saturates; a phone never does)."""
    from mpk.hostcpu import CpuFacts, int8_kernel, parse_cpuinfo
    from tests.unit.test_hostcpu import ARM64, EPYC_AVX2, XEON_VNNI

    arm_plain = ARM64.replace(" asimddp", "")
    cases = [(EPYC_AVX2, "x86_64"), (XEON_VNNI, "x86_64"), (ARM64, "arm64-v8a"), (arm_plain, "arm64-v8a")]
    got = harness(*[{"op": "cpu_int8", "cpuinfo": text, "abi": abi} for text, abi in cases])
    names = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm"}
    for (text, abi), kt in zip(cases, got, strict=True):
        _, flags = parse_cpuinfo(text)
        features = sorted(
            {names.get(f, f) for f in flags} & set(kt["features"]) | {names[f] for f in flags if f in names}
        )
        assert kt["features"] == features, (abi, kt)
        want = int8_kernel(CpuFacts("cpu", "aarch64" if abi.startswith("arm64") else "x86_64", tuple(kt["features"])))
        assert (kt["name"], kt["saturates"]) == (want.name, want.saturates), (abi, kt)
    assert [k["name"] for k in got] == ["avx2", "amx", "arm64-udot", "arm64-neon"]


def _real_ort_profile(tmp: Path, runs: int) -> Path:
    """A real ONNX Runtime profile of a small conv net (the JSON enable_profiling writes), ``runs`` inferences."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "fc")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
         helper.make_node("Flatten", ["p"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w, fc])  # fmt: skip
    model = tmp / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(model))
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / "ort")
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    for _ in range(runs):
        sess.run(None, {"x": x})
    return Path(sess.end_profiling())


def test_ort_profile_numbers_match_mpk_profiling(harness, tmp_path: Path) -> None:
    """The app's ORT profile reading (contract/Profile.kt) gives mpk.profiling's rows and comparisons exactly."""
    from mpk.contract.profile import finish
    from mpk.profiling import aggregate, ort_events

    runs, warmup = 6, 2
    path = _real_ort_profile(tmp_path, runs + warmup)
    (kt,) = harness({"op": "ortProfile", "path": str(path), "runs": runs, "warmup": warmup, "step_ns": 2_000_000,
                     "p50": 1.5, "mean": 1.75})  # fmt: skip
    events, seen = ort_events(json.loads(path.read_text()))
    assert seen == runs + warmup and len(events) >= 4 * seen
    py = finish({"status": "measured", "method": "m", "runs": runs, "profiled_ms": 2.0,
                 "ops": aggregate([e for e in events if e.run >= warmup], runs)}, p50_ms=1.5, mean_ms=1.75)  # fmt: skip
    assert [o["name"] for o in kt["ops"]] == [o["name"] for o in py["ops"]]
    for k_op, p_op in zip(kt["ops"], py["ops"], strict=True):
        for key in ("op_type", "provider", "delegated", "calls", "estimated"):
            assert k_op[key] == p_op[key], key
        for key in ("total_ms", "mean_ms", "share"):
            assert k_op[key] == pytest.approx(p_op[key], rel=1e-12), key
    for key in ("per_run_ms", "vs_p50", "overhead", "unprofiled_p50_ms", "unprofiled_mean_ms", "profiled_ms"):
        assert kt[key] == pytest.approx(py[key], rel=1e-12), key
    assert kt["status"] == "measured" and kt["runs"] == runs and kt["notes"] == []
    assert schema_problems(_with_profile(kt), "runner_result") == []


def _with_profile(profile: dict) -> dict:
    art = {"id": "onnx-fp32", "backend": "onnx", "scheme": "fp32", "status": "ok", "profile": profile}
    return {"schema_version": "mpk.runner-result/1", "run_id": "r", "device_id": "d", "emulated": False,
            "runner": {"name": "android_app", "version": "0", "runtimes": {"executorch": "1.4.1", "onnxruntime": "x"}},
            "device": {"model": "m", "abi": "arm64-v8a", "os": "android", "cores": 8},
            "settings": {"threads": 1, "warmup_iterations": 0, "min_iterations": 1, "min_seconds": 0.0},
            "started_utc": "t", "finished_utc": "t", "artifacts": [art]}  # fmt: skip


def test_profiled_pass_comes_after_everything_and_leaves_the_timed_loop_alone(harness, tmp_path: Path) -> None:
    spec_path = _spec(tmp_path, n_art=1)
    spec = json.loads(spec_path.read_text())
    spec["settings"]["profile"] = True
    assert schema_problems(spec, "runner_spec") == []
    spec_path.write_text(json.dumps(spec))
    profile = _real_ort_profile(tmp_path, 20 + 3)
    ref = np.fromfile(tmp_path / "out.bin", dtype="<f4").reshape(3, 10)
    (r,) = harness({"op": "measure", "spec": str(spec_path), "linked": LINKED, "outputs": [ref[0].tolist()],
                    "ort_profile": str(profile)})  # fmt: skip
    ev = r["events"]
    closed = ev.index("close")
    assert ev[closed + 1] == "profile:20:3" and ev[closed + 2 :] == ["profiled-run"] * 23, ev[closed:]
    out = r["outcome"]
    assert out["iterations"] == 7 and ev[: closed + 1].count("run") == 1 + 3 + 7 + 3  # the timed loop as without
    prof = out["profile"]
    stats = LatencyStats.from_samples(out["samples_ms"]).to_dict()
    assert prof["status"] == "measured" and prof["unprofiled_p50_ms"] == pytest.approx(stats["p50_ms"])
    assert prof["vs_p50"] == pytest.approx(prof["per_run_ms"] / stats["p50_ms"] - 1)
