"""Run a spec on this machine through ``python -m runners.host_runner`` in a child process.

A child process, not an in-process call, so mpk's own memory (the matrix,
the manifest, rich) never shows up in the measured numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mpk.errors import RunnerError
from runners import devicefacts
from runners.contract import load_result
from runners.devices import DeviceSpec
from runners.drivers.base import Driver, Probe

_ROOT = Path(__file__).resolve().parent.parent.parent


class HostDriver(Driver):
    name = "host"

    def supported_backends(self) -> tuple[str, ...]:
        return self.backends if sys.platform == "darwin" else tuple(b for b in self.backends if b != "coreml")

    def probe(self, device: DeviceSpec) -> Probe:
        return Probe(True, f"this machine ({devicefacts.cpu_model()}, {os.cpu_count()} cores)")

    def temperatures(self, device: DeviceSpec) -> dict[str, float]:
        return devicefacts.temperatures_c()

    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        spec_path = Path(spec_dir) / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        out = Path(spec_dir) / "result.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "runners.host_runner", "--spec", str(spec_path), "--out", str(out)]
        if device.facts:
            facts = Path(spec_dir) / "device-facts.json"
            facts.write_text(json.dumps(device.facts))
            cmd += ["--device-facts", str(facts)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"host runner gave no result within {timeout_s:.0f} s") from None
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip()[-1500:]
            raise RunnerError(f"host runner exited with {proc.returncode}: {tail}")
        (Path(spec_dir) / "host_runner.log").write_text(proc.stderr)
        return load_result(out)
