"""Without ``--ray``, ``mpk bench`` and ``mpk tune`` run as they always did and never import Ray.

Each runs for real in a fresh process (tiny ONNX package on the host runner; one digits-cnn trial), which
reports at exit whether ``ray`` was ever imported. Ray is installed here (``mpk[dev]`` includes ``mpk[ray]``),
so this is a test of mpk's imports, not of an absent package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from mpk.cli import run
try:
    run(sys.argv[1:])
finally:
    print("RAY-IMPORTED" if "ray" in sys.modules else "RAY-NOT-IMPORTED", file=sys.stderr)
"""


def _mpk(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)  # fmt: skip


def test_bench_without_ray_never_imports_it(tmp_path: Path) -> None:
    pkg = tiny_package(tmp_path / "pkg")
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [{"id": "host", "kind": "host"}],
                                       "defaults": {"warmup_iterations": 1, "min_iterations": 3, "min_seconds": 0,
                                                    "cooldown_s": 0}}))  # fmt: skip
    r = _mpk(["bench", str(pkg), "--devices", str(devices), "--out", str(tmp_path / "out"), "--artifact",
              "onnx-fp32", "--fallback", "none"], tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "RAY-NOT-IMPORTED"
    (cell,) = json.loads((tmp_path / "out" / "results.json").read_text())["cells"]
    assert cell["outcome"] == "ok" and "where" not in cell, "a run on one machine is written as before"


def test_tune_without_ray_never_imports_it(tmp_path: Path) -> None:
    args = ["--target", "channels", "--prune", "0", "--schemes", "fp32", "--eval-count", "16",
            "--calibration-count", "8", "--latency-iters", "2", "--floor", "top1_agreement=0.5"]  # fmt: skip
    r = _mpk(["tune", "--model", "digits-cnn", *args], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chosen (size, top1_agreement>=0.5): prune 0 + fp32" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "RAY-NOT-IMPORTED"
