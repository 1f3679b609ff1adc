"""``pip install mpk`` (no extras) in a fresh venv gates, reports, keeps history and checks devices.yaml:
a release job that only gates never installs torch.

The wheel is built from this tree; its dependencies come from PyPI (or pip's cache) under
constraints.txt, as ``make setup`` installs them. The venv is checked to hold no torch, executorch,
onnxruntime, coremltools or scipy before anything runs. About half a minute, most of it pip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gate_factory import DEVICES_YAML, cell, results, samples

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "executorch", "onnxruntime", "coremltools", "scipy", "onnx", "torchao")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with mpk's wheel and its light dependencies only; returns its bin/."""
    tmp = tmp_path_factory.mktemp("light")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("mpk", "packager", "runners"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp / "wheels"
    r = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
             str(src)])  # fmt: skip
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("mpk-*.whl")
    venv = tmp / "venv"
    r = run([sys.executable, "-m", "venv", str(venv)])
    assert r.returncode == 0, r.stderr
    r = run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-c",
             str(ROOT / "constraints.txt"), str(wheel)])  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return venv / "bin"


def test_light_install_has_no_heavy_runtime(light: Path) -> None:
    probe = f"import importlib.util as u, json; print(json.dumps([m for m in {HEAVY!r} if u.find_spec(m)]))"
    r = run([str(light / "python"), "-c", probe], cwd="/")
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr


def test_gate_report_history_devices_run_without_torch(light: Path, tmp_path: Path) -> None:
    res = tmp_path / "results.json"
    res.write_text(json.dumps(results([cell("pixel-7", "onnx-fp32", samples(10, 60, 1)),
                                       cell("pixel-7", "onnx-int8", samples(6, 60, 2))])))  # fmt: skip
    budgets = tmp_path / "devices.yaml"
    budgets.write_text(DEVICES_YAML + "  - {device: pixel-7, p90_ms: 500, peak_mem_mb: 1000}\n")
    mpk = str(light / "mpk")
    db = f"sqlite:///{tmp_path / 'h.sqlite'}"
    r = run([mpk, "gate", str(res), "--budgets", str(budgets), "--report", str(tmp_path / "rep"), "--history",
             "--db", db], cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS: 4 passed" in r.stdout and (tmp_path / "rep" / "report.html").is_file()
    r = run([mpk, "report", str(res), "--out", str(tmp_path / "rep2"), "--budgets", str(budgets)], cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "rep2" / "junit.xml").is_file(), r.stdout + r.stderr
    r = run([mpk, "history", "--device", "pixel-7", "--artifact", "onnx-int8", "--db", db], cwd=tmp_path)
    assert r.returncode == 0 and "abc1234" in r.stdout, r.stdout + r.stderr
    r = run([mpk, "devices", "--devices", str(ROOT / "devices.yaml"), "--no-probe"], cwd=tmp_path)
    assert r.returncode == 0 and "pixel-7" in r.stdout, r.stdout + r.stderr
    # the heavy commands say what to install, in one line, instead of a traceback
    r = run([mpk, "package", "--model", "digits-cnn", "--out", str(tmp_path / "pkg")], cwd=tmp_path)
    assert r.returncode == 4 and "pip install 'mpk[package]'" in r.stderr and "Traceback" not in r.stderr
