"""Fault injection: the virtual device killed, frozen or stopped during a cell, and Ctrl-C in ``mpk bench``.

The device is its own process (as ``mpk emulator start`` runs it) so it can be SIGKILLed or SIGSTOPped for real.
The end-to-end tests run the real ``mpk bench`` CLI on a real tiny ONNX package with the real host runner on
both the host and the device. The driver-level tests replace only the benchmark runner with the stand-in of
vdevice_helpers.py (so a cell lasts as long as the test needs); client, device and supervision are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from mpk.errors import DeviceError, RunnerError
from runners.devices import DeviceSpec
from runners.drivers.android_app import AndroidAppDriver
from runners.transport.adb_shell import AdbShellTransport
from runners.transport.adbkey import ensure_key
from tests.integration.vdevice_helpers import (
    REPO,
    processes_mentioning,
    start_device_process,
    stop_device_process,
    valid_spec,
    write_runner,
)

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package

ARTIFACTS = ["onnx-fp32", "onnx-fp32-b"]


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package with a second id for the same ONNX file: two cells per device, each ONNX-fast."""
    path = tiny_package(tmp_path_factory.mktemp("pkg"))
    m = json.loads(path.read_text())
    m["artifacts"].append({**m["artifacts"][0], "id": "onnx-fp32-b"})
    path.write_text(json.dumps(m))
    return path


@pytest.fixture()
def key(tmp_path: Path) -> Path:
    """mpk's key where ``mpk bench`` will look for it (XDG_CONFIG_HOME/mpk/adbkey)."""
    return ensure_key(tmp_path / "cfg" / "mpk" / "adbkey")


def _devices_yaml(tmp_path: Path, port: int, *, host: bool, min_seconds: float) -> Path:
    doc = {
        "version": 1,
        "defaults": {"warmup_iterations": 1, "min_iterations": 5, "min_seconds": min_seconds, "cooldown_s": 0},
        "devices": [
            *([{"id": "host", "kind": "host", "runner": "host"}] if host else []),
            {"id": "vdev", "kind": "emulator", "address": f"127.0.0.1:{port}", "transport": "adb_shell",
             "runner": "android_app"},
        ],
    }  # fmt: skip
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _bench(tmp_path: Path, manifest: Path, devices: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               MPK_STATE_DIR=str(tmp_path / "state"))  # fmt: skip
    env.pop("CI", None)
    cmd = [sys.executable, "-m", "mpk", "bench", str(manifest), "--devices", str(devices), "--out",
           str(tmp_path / "out"), "--fallback", "none", *(a for x in ARTIFACTS for a in ("--artifact", x))]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_activity(root: Path, bench: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the device's benchmark is running: its supervisor and the host runner it started (both name the
    private copy of the spec), plus a moment so mpk is polling for DONE."""
    staged = str(root / "activity")
    deadline = time.monotonic() + timeout
    while len(processes_mentioning(staged)) < 2:
        if bench.poll() is not None or time.monotonic() > deadline:
            out = bench.communicate()[0] if bench.poll() is not None else ""
            raise AssertionError(f"no benchmark started on the device; mpk bench said:\n{out[-3000:]}")
        time.sleep(0.02)
    time.sleep(0.5)


def _gone(text: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not processes_mentioning(text)


def _utc(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def test_device_killed_mid_cell_ends_the_bench_with_exit_4(pkg: Path, tmp_path: Path, key: Path) -> None:
    """Done-when of issue 11: SIGKILL the device while its first cell runs. ``mpk bench`` ends within 60 s with
    exit 4; results.json is complete, the host's cells are ok, the device's cells are errors naming the lost
    device; the host-CPU lock was released at once (host cells still to run start within seconds); and the
    benchmark the device had started dies with it."""
    proc, port, root = start_device_process(tmp_path, key)
    bench = None
    try:
        bench = _bench(tmp_path, pkg, _devices_yaml(tmp_path, port, host=True, min_seconds=2.0))
        _wait_for_activity(root, bench)
        proc.kill()
        killed, killed_at = time.monotonic(), datetime.now(UTC)
        out, _ = bench.communicate(timeout=90)
        took = time.monotonic() - killed
    finally:
        stop_device_process(proc)
        if bench is not None and bench.poll() is None:
            bench.kill()
    assert bench.returncode == 4, out[-3000:]
    assert took < 60, f"mpk bench needed {took:.0f} s after the device died"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["complete"] is True
    cells = {(c["device_id"], c["artifact_id"]): c for c in doc["cells"]}
    assert len(cells) == 4
    for a in ARTIFACTS:
        host = cells[("host", a)]
        assert host["status"] == "ok" and host["result"]["stats"]["p50_ms"] > 0, host["error"]
        if _utc(host["started_utc"]) > killed_at:
            assert (_utc(host["started_utc"]) - killed_at).total_seconds() < 15, "the host-CPU lock was held on"
        dev = cells[("vdev", a)]
        assert dev["status"] == "error" and dev["error"], dev
    first = min((cells[("vdev", a)] for a in ARTIFACTS), key=lambda c: c["started_utc"] or "~")
    assert "127.0.0.1" in first["error"] or "connection" in first["error"].lower(), first["error"]
    assert _gone(str(root / "activity"), 10), "the benchmark outlived its device"


def test_ctrl_c_stops_the_cell_on_the_device(pkg: Path, tmp_path: Path, key: Path) -> None:
    """SIGINT to ``mpk bench`` mid-cell: mpk exits 130, sends ``am force-stop org.mpk.bench``, and the device kills
    the host runner it started for that activity; the device itself keeps serving."""
    proc, port, root = start_device_process(tmp_path, key)
    bench = None
    try:
        bench = _bench(tmp_path, pkg, _devices_yaml(tmp_path, port, host=False, min_seconds=60.0))
        _wait_for_activity(root, bench)
        time.sleep(0.5)
        bench.send_signal(signal.SIGINT)
        out, _ = bench.communicate(timeout=30)
        assert bench.returncode == 130, out[-3000:]
        assert _gone(str(root / "activity"), 10), "the interrupted benchmark kept running on the host CPU"
        tr = AdbShellTransport(f"127.0.0.1:{port}", key_path=key)
        try:
            assert tr.shell("pidof org.mpk.bench").exit_code == 1
            assert "Force stopping org.mpk.bench" in tr.shell("logcat -d").stdout
        finally:
            tr.close()
    finally:
        if bench is not None and bench.poll() is None:
            bench.kill()
        assert stop_device_process(proc) == 0


# -- the driver against a device that goes away ------------------------------------------------------------------
def _driver_setup(tmp_path: Path, key: Path, device_id: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("MPK_TEST_PIDS", str(tmp_path))  # the stand-in runner writes runner.pid here
    runner = " ".join(write_runner(tmp_path / "runner"))
    proc, port, root = start_device_process(tmp_path, key, "--runner", runner)
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "model.onnx").write_bytes(b"model")
    spec = valid_spec("fault", device_id=device_id)
    device = DeviceSpec(id="vdev", kind="emulator", runner="android_app", transport="adb_shell",
                        address=f"127.0.0.1:{port}")  # fmt: skip
    return proc, port, root, spec_dir, spec, device


def _wait_running(tmp_path: Path) -> None:
    """Until the stand-in runner is up (so ``am start`` has returned and the driver is polling for DONE)."""
    deadline = time.monotonic() + 60
    while not (tmp_path / "runner.pid").exists():
        assert time.monotonic() < deadline, "the benchmark never started on the device"
        time.sleep(0.02)
    time.sleep(0.3)


def _run_in_thread(driver: AndroidAppDriver, spec_dir: Path, spec: dict, device: DeviceSpec) -> dict:
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = driver.run(spec_dir, spec, device, timeout_s=600)
        except Exception as e:
            box["error"] = e
        box["ended"] = time.monotonic()

    box["thread"] = threading.Thread(target=target, daemon=True)
    box["thread"].start()
    return box


def test_killed_device_fails_the_cell_at_once_without_spinning(tmp_path: Path, key: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The closed socket used to be read in a busy loop until the 3,600 s timeout; now the cell fails with the
    reason in seconds, and the client spends almost no CPU meanwhile."""
    proc, _port, root, spec_dir, spec, device = _driver_setup(tmp_path, key, "sleep:60", monkeypatch)
    try:
        box = _run_in_thread(AndroidAppDriver(), spec_dir, spec, device)
        _wait_running(tmp_path)
        cpu0 = time.process_time()
        proc.kill()
        killed = time.monotonic()
        box["thread"].join(30)
        cpu = time.process_time() - cpu0
    finally:
        stop_device_process(proc)
    assert isinstance(box.get("error"), DeviceError), box
    assert box["ended"] - killed < 10, f"the lost device was noticed after {box['ended'] - killed:.1f} s"
    assert cpu < 2.0, f"the client burned {cpu:.1f} CPU-s on a dead connection"
    assert _gone(str(root / "activity"), 10)


def test_frozen_device_fails_the_cell_at_the_poll_timeout(tmp_path: Path, key: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """SIGSTOP: the socket stays open and nothing answers. The cell fails at the poll's own timeout (plus one
    reconnect), not at the benchmark's."""
    proc, _port, _root, spec_dir, spec, device = _driver_setup(tmp_path, key, "sleep:60", monkeypatch)
    driver = AndroidAppDriver()
    driver.poll_timeout_s = 2.0
    try:
        box = _run_in_thread(driver, spec_dir, spec, device)
        _wait_running(tmp_path)
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        box["thread"].join(60)
    finally:
        proc.send_signal(signal.SIGCONT)
        stop_device_process(proc)
    assert isinstance(box.get("error"), DeviceError), box
    assert box["ended"] - stopped < 25, f"a frozen device was noticed after {box['ended'] - stopped:.1f} s"


def test_app_stopped_on_the_device_fails_the_cell_with_the_reason(tmp_path: Path, key: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Someone runs ``am force-stop`` (or the app crashes) mid-run: no DONE will ever come. The liveness check
    (``pidof``) ends the cell within seconds with that reason, instead of waiting for the timeout."""
    proc, port, root, spec_dir, spec, device = _driver_setup(tmp_path, key, "sleep:60", monkeypatch)
    driver = AndroidAppDriver()
    driver.liveness_s = 0.5
    try:
        box = _run_in_thread(driver, spec_dir, spec, device)
        _wait_running(tmp_path)
        tr = AdbShellTransport(f"127.0.0.1:{port}", key_path=key)
        try:
            assert tr.shell("am force-stop org.mpk.bench").exit_code == 0
        finally:
            tr.close()
        stopped = time.monotonic()
        box["thread"].join(30)
        assert isinstance(box.get("error"), RunnerError), box
        assert "no longer running and wrote no DONE" in box["error"].message
        assert box["ended"] - stopped < 5
        assert _gone(str(root / "activity"), 5)
    finally:
        assert stop_device_process(proc) == 0


def test_cancel_stops_the_benchmark_on_the_device(tmp_path: Path, key: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """What Ctrl-C does through the matrix, at the driver: cancel() from another thread ends the wait and sends
    ``am force-stop`` over its own connection; the runner the device started is killed."""
    proc, _port, root, spec_dir, spec, device = _driver_setup(tmp_path, key, "sleep:60", monkeypatch)
    driver = AndroidAppDriver()
    try:
        box = _run_in_thread(driver, spec_dir, spec, device)
        _wait_running(tmp_path)
        t0 = time.monotonic()
        driver.cancel()
        box["thread"].join(30)
        assert isinstance(box.get("error"), RunnerError) and "cancelled" in box["error"].message, box
        assert box["ended"] - t0 < 5
        assert _gone(str(root / "activity"), 5)
    finally:
        assert stop_device_process(proc) == 0
