"""``--until-conclusive`` through the real bench: the host runner re-measures a tiny ONNX model in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from mpk.contract import validate_results
from runners.config import load_devices
from runners.gate import GateConfig, run_gate
from runners.gate.verdict import cell_samples
from runners.matrix import run_matrix
from tests.integration.bench_helpers import tiny_package

DEVICES = """\
version: 1
defaults: {warmup_iterations: 2, min_iterations: 12, min_seconds: 0, max_seconds: 30, cooldown_s: 0, threads: 1}
devices:
  - {id: host, kind: host}
budgets:
"""


def test_until_conclusive_remeasures_with_the_host_runner(tmp_path: Path) -> None:
    manifest = tiny_package(tmp_path / "package")
    devices = tmp_path / "devices.yaml"
    devices.write_text(DEVICES + "  - {device: host, p50_ms: 1000}\n")
    doc = run_matrix(manifest, load_devices(devices), tmp_path / "bench", only_artifacts=["onnx-fp32"])
    path = tmp_path / "bench" / "results.json"
    (first,) = doc["cells"]
    assert first["outcome"] == "ok", first["error"]
    n0 = len(cell_samples(first))
    # a budget in the middle of the measured p50 interval: inconclusive by construction
    lo, hi = first["result"]["stats"]["p50_ci_ms"]
    devices.write_text(DEVICES + f"  - {{device: host, p50_ms: {(lo + hi) / 2:.6f}}}\n")
    assert run_gate(GateConfig(path, budgets=devices)).exit_code == 3

    log: list[str] = []
    config = GateConfig(path, budgets=devices, until_conclusive=True, max_rounds=2, time_cap_s=120)
    out = run_gate(config, log=log.append)
    (again,) = out.results["cells"]
    rounds = [m for m in log if "round " in m]
    assert rounds and "round 1" in rounds[0]
    # each round doubles the samples: n0 -> 2 n0 -> 4 n0
    assert len(cell_samples(again)) == n0 * 2 ** len(rounds)
    if len(rounds) < 2:
        # the new samples can move p50 clear of the budget after one round; then it must stop with a verdict
        assert out.exit_code in (0, 1), log
    assert cell_samples(again)[:n0].tolist() == cell_samples(first).tolist()  # old samples kept, new appended
    assert again["settings"] == first["settings"] and again["ran_on"] == "host"
    assert out.exit_code in (0, 1, 3)
    validate_results(json.loads(json.dumps(out.results)))
