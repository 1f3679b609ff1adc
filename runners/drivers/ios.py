"""Run a spec through mpk's iOS benchmark app with ``xcrun devicectl`` (Xcode 15+, macOS only).

The protocol mirrors the Android app's, with the app's data container in place
of /data/local/tmp and run-as:

1. ``devicectl device install app`` (once per app build; skipped when ``MPK_IOS_APP`` is unset),
2. ``devicectl device copy to --domain-type appDataContainer`` every file of the
   spec into ``Documents/mpk/<run_id>/`` (``.mlpackage`` directories are copied whole),
3. ``devicectl device process launch --terminate-existing <bundle> --spec mpk/<run_id>/spec.json``
   (the app resolves ``--spec`` relative to its Documents directory),
4. poll ``copy from`` of ``Documents/mpk/<run_id>/DONE`` until it says ``ok`` or
   ``error: <message>``, then copy back ``result.json`` and validate it.

Command construction is pure (:func:`install_cmd`, :func:`copy_to_cmd`, ...) and
unit-tested anywhere; running it needs macOS with Xcode and a paired device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mpk.errors import DeviceError, DeviceTimeout, RunnerError, RuntimeMissing, SchemaError
from runners.devices import DeviceSpec
from runners.drivers.base import Driver, Probe

BUNDLE_ID = "org.mpk.bench"
DOMAIN = ["--domain-type", "appDataContainer", "--domain-identifier", BUNDLE_ID]


def install_cmd(udid: str, app: Path) -> list[str]:
    """``xcrun devicectl device install app --device UDID path/to/MpkBench.app``"""
    return ["xcrun", "devicectl", "device", "install", "app", "--device", udid, str(app)]


def copy_to_cmd(udid: str, local: Path, dest: str) -> list[str]:
    """Copy a local file or directory into the app's data container (``dest`` relative to the container)."""
    return ["xcrun", "devicectl", "device", "copy", "to", "--device", udid, *DOMAIN,
            "--source", str(local), "--destination", dest]  # fmt: skip


def copy_from_cmd(udid: str, source: str, local: Path) -> list[str]:
    return ["xcrun", "devicectl", "device", "copy", "from", "--device", udid, *DOMAIN,
            "--source", source, "--destination", str(local)]  # fmt: skip


def launch_cmd(udid: str, spec_rel: str) -> list[str]:
    """Launch (restarting any earlier instance) with ``--spec`` relative to the app's Documents directory."""
    return ["xcrun", "devicectl", "device", "process", "launch", "--device", udid, "--terminate-existing",
            BUNDLE_ID, "--spec", spec_rel]  # fmt: skip


def list_devices_cmd(json_out: Path) -> list[str]:
    return ["xcrun", "devicectl", "list", "devices", "--json-output", str(json_out)]


def spec_files(spec: dict[str, Any]) -> list[str]:
    """Every path a spec names, relative to its directory (artifacts, extra files, reference tensors)."""
    files: list[str] = []
    for a in spec["artifacts"]:
        files.append(a["path"])
        files.extend(a.get("extra_files") or [])
    ref = spec.get("reference") or {}
    files.extend(t["path"] for t in [*ref.get("inputs", []), *ref.get("outputs", [])])
    return list(dict.fromkeys(files))


def run_plan(udid: str, spec_dir: Path, spec: dict[str, Any], app: Path | None) -> list[list[str]]:
    """Every command before polling, in order: install (if an app is given), copies, launch."""
    base = f"Documents/mpk/{spec['run_id']}"
    cmds = [install_cmd(udid, app)] if app else []
    cmds += [copy_to_cmd(udid, Path(spec_dir) / rel, f"{base}/{rel}") for rel in [*spec_files(spec), "spec.json"]]
    cmds.append(launch_cmd(udid, f"mpk/{spec['run_id']}/spec.json"))
    return cmds


class IosAppDriver(Driver):
    """devices.yaml ``kind: ios`` (runner ios_app): ``serial`` is the device's UDID from ``devicectl list devices``."""

    name = "ios_app"
    backends = ("coreml", "executorch")
    poll_s = 1.0

    @staticmethod
    def _require_macos(device: DeviceSpec) -> str:
        if sys.platform != "darwin" or not shutil.which("xcrun"):
            raise RuntimeMissing(f"device {device.id}: iOS devices need macOS with Xcode (xcrun devicectl)")
        if not device.serial:
            raise DeviceError(device.id, "needs 'serial: <UDID>' in devices.yaml (see `xcrun devicectl list devices`)")
        return device.serial

    @staticmethod
    def _call(device: DeviceSpec, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(device.id, f"{' '.join(argv[:5])} timed out after {timeout:.0f} s") from None
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip()[-600:]
            raise DeviceError(device.id, f"{' '.join(argv[2:5])} failed (exit {p.returncode}): {tail}")
        return p

    def probe(self, device: DeviceSpec) -> Probe:
        try:
            udid = self._require_macos(device)
        except (RuntimeMissing, DeviceError) as e:
            return Probe(False, e.format_message())
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "devices.json"
            p = subprocess.run(list_devices_cmd(out), capture_output=True, text=True, timeout=60)
            text = out.read_text() if out.exists() else ""
        found = p.returncode == 0 and udid in text
        return Probe(found, f"{udid} {'paired' if found else 'not listed by devicectl'}")

    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        from mpk.contract import validate_result

        udid = self._require_macos(device)
        spec_dir = Path(spec_dir)
        (spec_dir / "spec.json").write_text(json.dumps(spec, indent=1))
        app = Path(os.environ["MPK_IOS_APP"]) if os.environ.get("MPK_IOS_APP") else None
        for argv in run_plan(udid, spec_dir, spec, app):
            self._call(device, argv, timeout=600)
        base = f"Documents/mpk/{spec['run_id']}"
        deadline = time.monotonic() + timeout_s
        with tempfile.TemporaryDirectory() as d:
            done_local, result_local = Path(d) / "DONE", Path(d) / "result.json"
            while True:
                p = subprocess.run(copy_from_cmd(udid, f"{base}/DONE", done_local), capture_output=True, timeout=120)
                if p.returncode == 0 and done_local.exists() and done_local.read_text().strip():
                    break
                if time.monotonic() > deadline:
                    raise DeviceTimeout(device.id, f"iOS app did not finish run {spec['run_id']}")
                time.sleep(self.poll_s)
            done = done_local.read_text().strip()
            if done != "ok":
                raise RunnerError(f"device {device.id}: iOS benchmark app reported {done}")
            self._call(device, copy_from_cmd(udid, f"{base}/result.json", result_local), timeout=120)
            try:
                result = json.loads(result_local.read_text())
            except json.JSONDecodeError as e:
                raise SchemaError(f"device {device.id}: result.json is not JSON: {e}") from None
        (spec_dir / "result.json").write_text(json.dumps(result, indent=1))
        return validate_result(result, what=f"result from {device.id}")
