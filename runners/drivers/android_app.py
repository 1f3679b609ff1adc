"""Run a spec through the mpk benchmark app (``org.mpk.bench``) over a Transport.

The protocol (the same for a real phone, an emulator and mpk's virtual device):

1. push artifacts, extra files, reference ``.bin`` tensors and ``spec.json`` to
   ``/data/local/tmp/mpk/<run_id>/`` (the transport skips identical files by sha256),
2. ``am start -S -W -n org.mpk.bench/.BenchmarkActivity --es spec <remote spec>``
   (``-S`` stops an instance a previous, interrupted bench may have left running;
   ``-W`` returns once the activity is up, the benchmark runs on in the app),
3. poll ``run-as org.mpk.bench cat files/mpk/<run_id>/DONE`` until it says ``ok``
   or ``error: <message>``; every ``liveness_s`` check ``pidof org.mpk.bench``, so
   an app that died without DONE fails the cell at once, and each poll has its own
   short timeout, so a device that vanishes or stops answering is a DeviceError
   within seconds (the cell's ``timeout_s`` only bounds a benchmark that runs on),
4. ``run-as org.mpk.bench cat files/mpk/<run_id>/result.json``, validate it, and
   fill in device facts the app did not report from the mpk side (getprop,
   thermal zones, cpufreq, ``dumpsys battery``).

:meth:`AndroidAppDriver.cancel` (Ctrl-C in ``mpk bench``) sends ``am force-stop
org.mpk.bench`` over a fresh connection, so the benchmark stops on the device too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from mpk.contract import validate_result
from mpk.errors import DeviceError, DeviceTimeout, MpkError, RunnerError, SchemaError
from runners.devices import DeviceSpec
from runners.drivers.base import Driver, Probe
from runners.transport import Transport
from runners.transport import open_transport as _open_transport

log = logging.getLogger("mpk.bench")

PACKAGE = "org.mpk.bench"
ACTIVITY = "org.mpk.bench/.BenchmarkActivity"
REMOTE_ROOT = "/data/local/tmp/mpk"


def open_transport(device: DeviceSpec) -> Transport:
    """A Transport for ``device`` from the ``runners.transport.TRANSPORTS`` registry."""
    target = device.serial or device.address
    if not target:
        raise DeviceError(device.id, "has neither serial nor address", reason="not-found")
    return _open_transport(device.transport or "adb_server", target, address=device.address)


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def remote_files(spec: dict[str, Any]) -> list[str]:
    """Every file a spec refers to, relative to its directory (artifacts, extra files, reference tensors)."""
    files: list[str] = []
    for a in spec["artifacts"]:
        files.append(a["path"])
        files.extend(a.get("extra_files") or [])
        files.extend((a.get("profiling") or {}).values())  # only in a profiling spec (runners/matrix.py)
    ref = spec.get("reference") or {}
    files.extend(t["path"] for t in ref.get("inputs", []) + ref.get("outputs", []))
    return list(dict.fromkeys(files))


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {e.message if isinstance(e, MpkError) else e}"


def parse_battery(text: str) -> dict[str, Any] | None:
    """``dumpsys battery`` -> {level, temperature_c, status, plugged}; None when nothing parsed."""
    vals = dict(re.findall(r"^\s*([A-Za-z ]+):\s*(\S+)\s*$", text, flags=re.M))
    out: dict[str, Any] = {}
    if vals.get("level", "").isdigit():
        out["level"] = int(vals["level"])
    if vals.get("temperature", "").lstrip("-").isdigit():
        out["temperature_c"] = int(vals["temperature"]) / 10.0  # dumpsys reports tenths of a degree
    if "status" in vals:
        out["status"] = vals["status"]
    plugged = [k.split()[0].lower() for k, v in vals.items() if k.endswith("powered") and v == "true"]
    if plugged or out:
        out["plugged"] = plugged
    return out or None


class AndroidAppDriver(Driver):
    name = "android_app"
    backends = ("executorch", "onnx")
    poll_s = 0.25
    #: how often, while waiting for DONE, mpk checks that the app process is still alive
    liveness_s = 2.0
    #: time limit of each poll: a device that stops answering fails the cell here, not at the cell's timeout
    poll_timeout_s = 15.0
    #: ``am start -W`` waits for the app's launch (seconds on a phone), not for the benchmark
    launch_timeout_s = 60.0

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._running_on: DeviceSpec | None = None

    def probe(self, device: DeviceSpec) -> Probe:
        try:
            t = open_transport(device)
        except Exception as e:  # a probe reports, it never raises
            return Probe(False, _why(e))
        try:
            r = t.shell("getprop ro.product.model", timeout=10)
            return Probe(r.exit_code == 0, r.stdout.strip() or r.stderr.strip() or "no answer")
        except Exception as e:
            return Probe(False, _why(e))
        finally:
            t.close()

    def temperatures(self, device: DeviceSpec) -> dict[str, float]:
        t = open_transport(device)
        try:
            return self._temperatures(t)
        finally:
            t.close()

    @staticmethod
    def _temperatures(t: Any) -> dict[str, float]:
        types = t.shell("cat /sys/class/thermal/thermal_zone*/type", timeout=10)
        temps = t.shell("cat /sys/class/thermal/thermal_zone*/temp", timeout=10)
        out: dict[str, float] = {}
        if types.exit_code != 0 and not types.stdout:
            return out
        for name, raw in zip(types.stdout.split(), temps.stdout.split(), strict=False):
            try:
                v = int(raw) / 1000.0
            except ValueError:
                continue
            if -40 < v < 150:
                out[name if name not in out else f"{name}.{len(out)}"] = v
        return out

    def device_facts(self, t: Any) -> dict[str, Any]:
        """Facts read from the mpk side; the app's own facts take precedence where it gives them."""
        props = t.getprop()
        freqs = t.shell("cat /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq", timeout=10).stdout.split()
        gov = t.shell("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", timeout=10)
        battery = t.shell("dumpsys battery", timeout=10)
        cores = t.shell("cat /sys/devices/system/cpu/possible", timeout=10).stdout.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", cores)
        return {
            "model": props.get("ro.product.model", "unknown"),
            "manufacturer": props.get("ro.product.manufacturer"),
            "soc": props.get("ro.soc.model") or props.get("ro.board.platform"),
            "abi": props.get("ro.product.cpu.abi", "unknown"),
            "os": "android",
            "os_version": props.get("ro.build.version.release"),
            "cores": int(m.group(2)) + 1 if m else max(1, len(freqs)),
            "governor": gov.stdout.strip() or None if gov.exit_code == 0 else None,
            "cpu_max_freq_khz": [int(f) for f in freqs if f.isdigit()] or None,
            "battery": parse_battery(battery.stdout) if battery.exit_code == 0 else None,
        }

    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        run_id = spec["run_id"]
        remote = f"{REMOTE_ROOT}/{run_id}"
        spec_dir = Path(spec_dir)
        (spec_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        t = open_transport(device)
        try:
            facts = self.device_facts(t)
            facts["temperatures_c_before"] = self._temperatures(t)
            dirs = {str(Path(remote, f).parent) for f in remote_files(spec)} | {remote}
            mk = t.shell("mkdir -p " + " ".join(_quote(d) for d in sorted(dirs)), timeout=30)
            if mk.exit_code != 0:
                raise DeviceError(device.id, f"cannot create {remote}: {mk.stderr.strip()}", reason="push-failed")
            for rel in [*remote_files(spec), "spec.json"]:
                t.push(spec_dir / rel, f"{remote}/{rel}")
            started = time.monotonic()
            self._running_on = device
            if self._cancelled.is_set():
                raise RunnerError(f"device {device.id}: cancelled before the benchmark started")
            am = t.shell(f"am start -S -W -n {ACTIVITY} --es spec {_quote(remote + '/spec.json')}",
                         timeout=self.launch_timeout_s, retry=False)  # fmt: skip
            if am.exit_code != 0 or "Error" in am.stdout:
                raise RunnerError(f"device {device.id}: am start failed: {(am.stdout + am.stderr).strip()[-800:]}")
            done = self._wait_done(t, device, run_id, timeout_s - (time.monotonic() - started))
            self._running_on = None
            if done != "ok":
                raise RunnerError(f"device {device.id}: benchmark app reported {done}")
            cat = t.shell(f"run-as {PACKAGE} cat files/mpk/{run_id}/result.json", timeout=60)
            if cat.exit_code != 0:
                raise RunnerError(f"device {device.id}: cannot read result.json: {cat.stderr.strip()}")
            try:
                result = json.loads(cat.stdout)
            except json.JSONDecodeError as e:
                raise SchemaError(f"device {device.id}: result.json is not JSON: {e}") from None
            after = self._temperatures(t)
        finally:
            self._running_on = None
            t.close()
        dev = result.get("device") if isinstance(result.get("device"), dict) else None
        if dev is not None:
            for k, v in facts.items():  # the app's facts win; mpk's fill the gaps
                if dev.get(k) in (None, {}, []):
                    dev[k] = v
            if not dev.get("temperatures_c_after"):
                dev["temperatures_c_after"] = after
        (spec_dir / "result.json").write_text(json.dumps(result, indent=1))
        return validate_result(result, what=f"result from {device.id}")

    def _wait_done(self, t: Transport, device: DeviceSpec, run_id: str, timeout_s: float) -> str:
        """DONE's text. RunnerError when the app dies without one; DeviceError when the device stops answering."""
        deadline = time.monotonic() + max(1.0, timeout_s)
        delay = self.poll_s
        last_check = time.monotonic()
        while True:
            if self._cancelled.is_set():
                raise RunnerError(f"device {device.id}: cancelled; the benchmark app was stopped")
            text = self._read_done(t, run_id)
            if text:
                return text
            now = time.monotonic()
            if now >= deadline:
                raise DeviceTimeout(device.id, f"benchmark app did not finish run {run_id} within {timeout_s:.0f} s")
            if now - last_check >= self.liveness_s:
                last_check = now
                if self._app_alive(t) is False:
                    text = self._read_done(t, run_id)  # DONE may have landed just before the process ended
                    if text:
                        return text
                    raise RunnerError(
                        f"device {device.id}: the benchmark app is no longer running and wrote no DONE for run "
                        f"{run_id} (it crashed or was stopped)"
                    )
            self._cancelled.wait(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 1.5, 2.0)

    def _read_done(self, t: Transport, run_id: str) -> str:
        r = t.shell(f"run-as {PACKAGE} cat files/mpk/{run_id}/DONE", timeout=self.poll_timeout_s)
        return r.stdout.strip() if r.exit_code == 0 else ""

    def _app_alive(self, t: Transport) -> bool | None:
        """``pidof org.mpk.bench``: True/False, None when the device has no pidof (toybox has it since Android 7)."""
        r = t.shell(f"pidof {PACKAGE}", timeout=self.poll_timeout_s)
        return {0: True, 1: False}.get(r.exit_code)

    def cancel(self) -> None:
        """Stop the cell this driver runs: the waiting loop ends, and ``am force-stop`` ends the app on the device.

        Called from another thread (the bench's Ctrl-C handling); uses its own connection because the
        running cell's connection is busy. Never raises: an unreachable device has nothing left to stop.
        """
        self._cancelled.set()
        device = self._running_on
        if device is None:
            return
        try:
            with open_transport(device) as t:
                t.shell(f"am force-stop {PACKAGE}", timeout=10, retry=False)
        except MpkError as e:
            log.warning("%s: could not stop the benchmark app: %s", device.id, e.message)
