"""Run a spec on this machine through ``python -m runners.host_runner`` in a child process.

A child process, not an in-process call, so mpk's own memory (the matrix,
the manifest, rich) never shows up in the measured numbers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from mpk.contract import read_result, write_spec
from mpk.errors import RunnerError
from runners import devicefacts
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

    def __init__(self) -> None:
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        spec_path = write_spec(Path(spec_dir) / "spec.json", spec)
        out = Path(spec_dir) / "result.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "runners.host_runner", "--spec", str(spec_path), "--out", str(out)]
        if device.facts:
            facts = Path(spec_dir) / "device-facts.json"
            facts.write_text(json.dumps(device.facts))
            cmd += ["--device-facts", str(facts)]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # Its own session (process group): the runner and the child measuring each artifact are stopped
        # together by cancel(), and a terminal's Ctrl-C reaches mpk, which decides, not the runner.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)  # fmt: skip
        with self._lock:
            self._live.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise RunnerError(f"host runner gave no result within {timeout_s:.0f} s") from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            with self._lock:
                self._live.discard(proc)
        if proc.returncode != 0 or not out.exists():
            tail = (stderr or stdout).strip()[-1500:]
            raise RunnerError(f"host runner exited with {proc.returncode}: {tail}")
        (Path(spec_dir) / "host_runner.log").write_text(stderr)
        return read_result(out)

    def cancel(self) -> None:
        with self._lock:
            live = list(self._live)
        for proc in live:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the runner's whole process group (the runner and its per-artifact child)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
