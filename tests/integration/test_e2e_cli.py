"""The whole path through the CLI as a user runs it: mpk package -> mpk bench -> mpk gate -> mpk report.

A real package of digits-cnn (ONNX and ExecuTorch fp32, verified), benchmarked on this host and on mpk's
virtual Android device standing in for an absent phone (``--fallback emulator``), gated against budgets,
reported. Every file passes from one command to the next exactly as on disk; nothing is mocked. Then the
results are edited the way the release-gate issue describes (an emulated cell relabelled as the phone) and
the gate must refuse them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICES = """\
version: 1
defaults: {warmup_iterations: 1, min_iterations: 40, min_seconds: 0, max_seconds: 60, cooldown_s: 0, threads: 1}
devices:
  - {id: host, kind: host}
  - {id: pixel-7, kind: android, serial: MPK-E2E-ABSENT, transport: adb_server, threads: 1}
budgets:
  - {device: host, p90_ms: 250, peak_mem_mb: 4096, accuracy: {top1_agreement_min: 0.99, cosine_min: 0.999}}
  - {device: pixel-7, emulated: true, p90_ms: 250, accuracy: {top1_agreement_min: 0.99}}
  - {device: pixel-7, p90_ms: 5}
"""


def mpk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CI", None)  # the fallback is asked for explicitly below
    r = subprocess.run([sys.executable, "-m", "mpk", *args], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=900)  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_package_bench_gate_report(tmp_path: Path) -> None:
    r = mpk("package", "--model", "digits-cnn", "--quantize", "none", "--backends", "onnx,executorch",
            "--eval-count", "32", "--calibration-count", "8", "--out", "pkg", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "devices.yaml").write_text(DEVICES)

    r = mpk("bench", "pkg/manifest.json", "--devices", "devices.yaml", "--fallback", "emulator", "--out", "bench",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert doc["schema_version"] == "mpk.results/2" and doc["complete"] is True
    assert doc["matrix"] == {"devices": ["host", "pixel-7"], "artifacts": ["onnx-fp32", "executorch-fp32"]}
    cells = {(c["device_id"], c["artifact_id"]): c for c in doc["cells"]}
    assert {c["outcome"] for c in cells.values()} == {"ok"}, [c["error"] for c in cells.values()]
    phone = cells[("pixel-7", "onnx-fp32")]
    assert phone["emulated"] is True and phone["ran_on"] != "pixel-7" and phone["device"]["os"] == "android"
    for c in cells.values():  # the numbers verification promised, measured again where the artifact ran
        assert c["result"]["accuracy"]["top1_agreement"] == 1.0 and c["result"]["iterations"] >= 40

    r = mpk("gate", "bench/results.json", "--budgets", "devices.yaml", "--report", "gate-report", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS: 12 passed (12 checks)" in r.stdout
    assert "budgets[2]" in r.stderr and "gated nothing" in r.stderr  # the phone's own rule: the phone was absent
    r = mpk("report", "bench/results.json", "--out", "report", "--budgets", "devices.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["verdict"] == "pass" and len(report["cells"]) == 4
    assert "emulated (host CPU:" in (tmp_path / "report" / "report.html").read_text()

    # an emulated cell relabelled as the phone would be judged by the phone's 5 ms budget: refused instead
    doc["cells"][[c["device_id"] for c in doc["cells"]].index("pixel-7")]["emulated"] = False
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    r = mpk("gate", "edited.json", "--budgets", "devices.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "is inconsistent" in r.stderr and "but says emulated: false" in r.stderr
