"""The host runner on real tiny artifacts: a real ONNX Runtime session and a real ExecuTorch program.

One spec holds four artifacts (ONNX, .pte, a corrupt ONNX, a CoreML package) and
runs once per module through ``python -m runners.host_runner`` exactly as the
virtual device and the host driver call it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mpk.contract import read_manifest, read_result
from runners.devices import RunSettings
from runners.matrix import build_spec, write_reference
from runners.stats import LatencyStats

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package

MIN_ITER, MIN_S = 5, 0.3
PIN = [os.cpu_count() - 1] if (os.cpu_count() or 1) > 1 else [0]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("hr")
    manifest_path = tiny_package(d)
    manifest = read_manifest(manifest_path)
    reference = write_reference(manifest, d, d / "reference")
    settings = RunSettings(warmup_iterations=2, min_iterations=MIN_ITER, min_seconds=MIN_S, max_seconds=30,
                           threads=1, cpu_affinity=tuple(PIN))  # fmt: skip
    spec = build_spec("run-1", "host", settings, manifest["artifacts"][0], reference)
    spec["artifacts"] = []
    corrupt = d / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    (d / "m.mlpackage").mkdir()
    (d / "m.mlpackage" / "Manifest.json").write_text("{}")
    for a in manifest["artifacts"]:
        spec["artifacts"].append({k: a[k] for k in ("id", "backend", "scheme", "path", "sha256")})
    spec["artifacts"].append({"id": "onnx-corrupt", "backend": "onnx", "scheme": "fp32", "path": "corrupt.onnx",
                              "sha256": hashlib.sha256(corrupt.read_bytes()).hexdigest()})  # fmt: skip
    spec["artifacts"].append({"id": "coreml-fp16", "backend": "coreml", "scheme": "fp16", "path": "m.mlpackage",
                              "sha256": "0" * 64})  # fmt: skip
    (d / "spec.json").write_text(json.dumps(spec))
    out = d / "result.json"
    proc = subprocess.run([sys.executable, "-m", "runners.host_runner", "--spec", str(d / "spec.json"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = read_result(out)  # validates against runner_result.schema.json
    return {"result": result, "by_id": {a["id"]: a for a in result["artifacts"]}, "stderr": proc.stderr}


@pytest.mark.parametrize("art_id", ["onnx-fp32", "executorch-fp32"])
def test_artifact_measured(ran: dict, art_id: str) -> None:
    a = ran["by_id"][art_id]
    assert a["status"] == "ok", a.get("error")
    samples = a["samples_ms"]
    assert len(samples) == a["iterations"] >= MIN_ITER
    # min_seconds is honoured: these models take well under 0.3 s / MIN_ITER, so more ran than min_iterations
    assert a["iterations"] > MIN_ITER and sum(samples) >= 0.5 * MIN_S * 1000
    assert a["stats"] == LatencyStats.from_samples(samples).to_dict()
    assert a["load_ms"] > 0 and a["first_inference_ms"] > 0
    mem = a["memory"]
    assert mem["peak_rss_mb"] > mem["baseline_rss_mb"] > 10
    assert mem["rise_mb"] == pytest.approx(mem["peak_rss_mb"] - mem["baseline_rss_mb"])
    acc = a["accuracy"]
    assert acc["samples"] == 4 and acc["top1_agreement"] == 1.0
    assert acc["cosine"] > 0.99999 and acc["max_abs_error"] < 1e-4 and acc["snr_db"] > 80


def test_corrupt_artifact_fails_alone_with_the_runtimes_message(ran: dict) -> None:
    a = ran["by_id"]["onnx-corrupt"]
    assert a["status"] == "error" and a["error"]["kind"] == "load"
    assert "INVALID_PROTOBUF" in a["error"]["message"] or "protobuf" in a["error"]["message"].lower()
    assert ran["by_id"]["onnx-fp32"]["status"] == "ok"


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS CoreML really runs")
def test_coreml_is_unsupported_off_macos(ran: dict) -> None:
    a = ran["by_id"]["coreml-fp16"]
    assert a["status"] == "error" and a["error"]["kind"] == "unsupported"
    assert "macOS" in a["error"]["message"]


def test_fresh_process_per_artifact_and_pinning(ran: dict) -> None:
    lines = re.findall(r"artifact (\S+) ran in pid (\d+) on cpus \[([\d, ]*)\]", ran["stderr"])
    pids = {aid: int(pid) for aid, pid, _ in lines}
    assert {"onnx-fp32", "executorch-fp32", "onnx-corrupt"} <= set(pids)
    assert len(set(pids.values())) == len(pids) and os.getpid() not in pids.values()
    assert all([int(c) for c in cpus.split(",")] == PIN for _, _, cpus in lines)
    assert ran["result"]["settings"]["cpu_affinity"] == PIN
    dev = ran["result"]["device"]
    assert dev["cores"] >= 1 and dev["host_cpu"] and dev["abi"]
    assert ran["result"]["emulated"] is False
