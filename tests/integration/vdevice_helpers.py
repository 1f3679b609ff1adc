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


# -- a raw ADB peer, for what no well-behaved client sends -------------------------------------------------------
def raw_connect(port: int, timeout: float = 5.0):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_pkt(sock: Any):
    from runners.vdevice import protocol as P

    return P.read_packet(sock, max_payload=1 << 20, check_data=False)


def raw_auth(port: int, key_path: Path, timeout: float = 5.0):
    """A socket past CNXN + AUTH with the private key at ``key_path`` (which the device must have authorized)."""
    from runners.transport.adbkey import load_private_key, sign_token
    from runners.vdevice import protocol as P

    s = raw_connect(port, timeout)
    s.sendall(P.Packet(P.A_CNXN, P.VERSION, 256 * 1024, b"host::\0").pack())
    token = read_pkt(s)
    assert token.name == "AUTH", token
    s.sendall(P.Packet(P.A_AUTH, P.AUTH_SIGNATURE, 0, sign_token(load_private_key(key_path), token.data)).pack())
    online = read_pkt(s)
    assert online.name == "CNXN", online
    return s


def open_service(sock: Any, service: str, local_id: int = 1) -> int:
    """OPEN ``service``; returns the device's stream id (0 when the device answered CLSE)."""
    from runners.vdevice import protocol as P

    sock.sendall(P.Packet(P.A_OPEN, local_id, 0, service.encode() + b"\0").pack())
    pkt = read_pkt(sock)
    return pkt.arg0 if pkt.name == "OKAY" else 0


def closed(sock: Any, within: float = 5.0) -> bool:
    """True when the peer closes ``sock`` within ``within`` seconds (anything it sends first is skipped)."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


# -- the device as its own process, as `mpk emulator start` runs it ---------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def start_device_process(tmp_path: Path, key_path: Path, *extra: str, preexec_fn: Any = None):
    """``python -m runners.vdevice serve`` with ``key_path``'s public key authorized; returns (proc, port, root).
    The caller stops it (``stop_device_process``). Its log is ``tmp_path/vdevice.log``."""
    import json
    import os
    import subprocess
    import sys

    root, ready, log_path = tmp_path / "dev", tmp_path / "ready.json", tmp_path / "vdevice.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log_path, "wb") as log_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runners.vdevice", "serve", "--root", str(root), "--ready-file", str(ready),
             "--authorize", str(key_path) + ".pub", *extra],
            stdout=log_f, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"virtual device did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["port"], root


def stop_device_process(proc: Any) -> int | None:
    """SIGTERM, wait, SIGKILL if needed; returns the exit status of a clean stop (None when it had to be killed)."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (Linux /proc)."""
    import os

    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if text.encode() in (d / "cmdline").read_bytes():
                stat = (d / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies have exited already
                    out.append(int(d.name))
        except OSError:
            continue
    return out
