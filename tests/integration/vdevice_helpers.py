"""Shared pieces for the virtual-device tests: a stand-in runner, schema-valid specs, DONE polling.

The stand-in runner replaces only the *host runner* (the benchmark itself, which costs seconds of ONNX Runtime
start-up per run); everything around it -- the ADB server, the sandbox, the activity's staging and supervision,
the real clients -- is the real code. Its ``device_id`` chooses what it does: ``fail`` exits non-zero,
``sleep:N`` sleeps N seconds first (a long benchmark), anything else writes a result at once. It reads every
file the spec names, as the real runner does, and records their sha256 in the result so tests can see exactly
what the runner was given.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

FAKE_RUNNER = r"""
import hashlib, json, os, sys, time
a = sys.argv[1:]
spec, out, facts = a[a.index("--spec") + 1], a[a.index("--out") + 1], a[a.index("--device-facts") + 1]
s = json.load(open(spec))
base = os.path.dirname(spec)
with open(os.path.join(os.environ.get("MPK_TEST_PIDS", base), "runner.pid"), "w") as f:
    f.write(str(os.getpid()))
if s["device_id"] == "fail":
    sys.exit("boom: asked to fail")
if s["device_id"].startswith("sleep:"):
    time.sleep(float(s["device_id"].split(":")[1]))
files = [x["path"] for x in s["artifacts"]] + [t["path"] for t in (s.get("reference") or {}).get("inputs", [])]
seen = {p: hashlib.sha256(open(os.path.join(base, p), "rb").read()).hexdigest() for p in files}
json.dump({"run_id": s["run_id"], "emulated": "--emulated" in a, "device": json.load(open(facts)), "seen": seen},
          open(out, "w"))
"""


def write_runner(directory: Path) -> list[str]:
    import sys

    directory.mkdir(parents=True, exist_ok=True)
    runner = directory / "fake_runner.py"
    runner.write_text(FAKE_RUNNER)
    return [sys.executable, str(runner)]


def valid_spec(run_id: str, *, device_id: str = "vd", path: str = "model.onnx",
               reference_path: str | None = None, extra_files: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A runner spec that passes the schema, naming ``path`` (and optionally a reference tensor file)."""
    art: dict[str, Any] = {"id": "m", "backend": "onnx", "scheme": "fp32", "path": path, "sha256": "0" * 64}
    if extra_files:
        art["extra_files"] = extra_files
    spec: dict[str, Any] = {
        "schema_version": "mpk.runner-spec/1",
        "run_id": run_id,
        "device_id": device_id,
        "settings": {"threads": 1, "warmup_iterations": 0, "min_iterations": 1, "min_seconds": 0},
        "artifacts": [art],
    }
    if reference_path is not None:
        t = {"name": "x", "path": reference_path, "shape": [1], "dtype": "float32"}
        spec["reference"] = {"samples": 1, "inputs": [t], "outputs": [dict(t, name="y")]}
    return spec


def wait_done(shell: Any, run_id: str, timeout: float = 30.0) -> str:
    """Poll DONE through ``shell(cmd) -> (exit_code, stdout)`` until it has text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, out = shell(f"run-as org.mpk.bench cat files/mpk/{run_id}/DONE")
        if code == 0 and out.strip():
            return out.strip()
        time.sleep(0.05)
    raise AssertionError(f"no DONE for {run_id} within {timeout} s")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
