"""Can a device's runtime load an artifact? Decided before anything is pushed.

The manifest says what each artifact needs (``artifacts[].runtime``, written by
``packager/runtime_requirements.py`` with the rules and their sources); a device says
which runtimes it links (:func:`device_runtimes`). :func:`check` compares them:

>>> check({"runtime": "executorch", "min_version": "1.4.0", "file_identifier": "ET12"},
...       {"executorch": "1.3.1"}).loadable
False
>>> check({"runtime": "onnxruntime", "min_version": "1.18", "ir_version": 10, "opsets": {"": 20}},
...       {"onnxruntime": "1.20.1"}).loadable
True

A device that does not say which runtime it has (mpk's virtual device, the native
tools, an older app) is not refused: the verdict is ``None`` ("unknown") and the apps
check again before loading. :func:`refuse_incompatible` is what ``mpk bench`` runs
after planning its devices and before its first push: it raises
:class:`~mpk.errors.UsageError` (exit 2) naming both versions for every artifact a
device cannot load.
"""

from __future__ import annotations

import platform
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mpk.errors import MpkError, UsageError
from mpk.runtimes import ET_FILE_IDENTIFIER, ORT_BUNDLED_ONNX, covers, ort_capability, version_tuple

#: the Android app's package; its versionName carries the runtimes it links (android_app/app/build.gradle.kts)
APP_PACKAGE = "org.mpk.bench"
#: ExecuTorch releases whose runtime is known to accept ET_FILE_IDENTIFIER (schema/program.fbs, v1.0.0..v1.4.1)
_ET_IDENTIFIER_KNOWN = ((1, 0), (1, 4))


@dataclass(frozen=True)
class Verdict:
    """``loadable``: True / False / None (unknown: the device did not say, or no rule covers it)."""

    loadable: bool | None
    message: str


def _minor(v: str) -> tuple[int, int]:
    t = version_tuple(v)
    return (t[0], t[1] if len(t) > 1 else 0) if t else (0, 0)


def check(requirement: dict[str, Any] | None, runtimes: dict[str, str] | None) -> Verdict:
    """Whether a runtime reported as ``runtimes`` (``{"executorch": "1.4.1", ...}``) loads ``requirement``."""
    if not requirement:
        return Verdict(None, "the manifest records no runtime requirement for this artifact")
    name = requirement["runtime"]
    have = (runtimes or {}).get(name)
    if have is None:
        return Verdict(None, f"the device does not report its {name} version")
    need = requirement.get("min_version")
    if name == "executorch":
        return _check_executorch(requirement, have, need)
    if name == "onnxruntime":
        return _check_onnxruntime(requirement, have, need)
    if name == "coreml":
        return _check_coreml(requirement, have, need)
    return Verdict(None, f"no compatibility rule for runtime {name!r}")


def _check_executorch(req: dict[str, Any], have: str, need: str | None) -> Verdict:
    what = f"the .pte needs ExecuTorch >= {need}" if need else "the .pte"
    ident = req.get("file_identifier")
    if ident and _ET_IDENTIFIER_KNOWN[0] <= _minor(have) <= _ET_IDENTIFIER_KNOWN[1] and ident != ET_FILE_IDENTIFIER:
        return Verdict(False, f"{what}; its file identifier is {ident!r} but ExecuTorch {have} loads only "
                              f"{ET_FILE_IDENTIFIER!r} programs")  # fmt: skip
    if need is None:
        return Verdict(None, "the exporter's ExecuTorch version is unknown")
    if _minor(have) < _minor(need):
        # runtime/COMPATIBILITY.md: no forward compatibility; a newer PTE on an older runtime is not guaranteed
        return Verdict(False, f"{what} (exported with {req.get('exported_with') or '?'}); the device has "
                              f"ExecuTorch {have}, and ExecuTorch guarantees no forward compatibility")  # fmt: skip
    return Verdict(True, f"{what}; the device has ExecuTorch {have}")


def _check_onnxruntime(req: dict[str, Any], have: str, need: str | None) -> Verdict:
    ir, opsets = int(req.get("ir_version") or 0), dict(req.get("opsets") or {})
    what = f"the model (IR {ir}, opsets {_fmt_opsets(opsets)}) needs ONNX Runtime >= {need or '?'}"
    cap = ort_capability(f"{_minor(have)[0]}.{_minor(have)[1]}")
    if cap is not None:  # a release in ORT's own table: decide exactly, as model.cc does
        ok = covers(cap, ir, opsets)
        return Verdict(ok, f"{what}; the device has ONNX Runtime {have} (IR <= {cap['ir']}, ai.onnx <= {cap['']})")
    if need is None:  # no release in the table loads it: older ones cannot either, newer ones may
        newest = max(ORT_BUNDLED_ONNX, key=version_tuple)
        if _minor(have) < _minor(newest):
            return Verdict(False, f"{what}; the device has ONNX Runtime {have}")
        return Verdict(None, f"{what}; no ONNX Runtime up to {newest} loads it, the device has {have}")
    # newer than the table: ORT loads every model an older ORT loaded (docs/reference/compatibility.md)
    ok = _minor(have) >= _minor(need)
    return Verdict(ok, f"{what}; the device has ONNX Runtime {have}")


def _check_coreml(req: dict[str, Any], have: str, need: str | None) -> Verdict:
    """``have`` is the OS CoreML ships with: 'ios 17.4' or 'macos 14.2' (a bare version means iOS)."""
    os_name, _, ver = have.strip().partition(" ") if " " in have.strip() else ("ios", "", have.strip())
    need_os = req.get("min_macos") if os_name.lower() == "macos" else need
    label = "macOS" if os_name.lower() == "macos" else "iOS"
    what = f"the model (CoreML spec {req.get('spec_version')}) needs {label} >= {need_os or '?'}"
    if need_os is None:
        return Verdict(None, what)
    ok = version_tuple(ver) >= version_tuple(need_os)
    return Verdict(ok, f"{what}; the device runs {label} {ver}")


def _fmt_opsets(opsets: dict[str, int]) -> str:
    keep = {("ai.onnx" if d == "" else d): v for d, v in opsets.items() if d in ("", "ai.onnx", "ai.onnx.ml")}
    return ", ".join(f"{d} {v}" for d, v in sorted(keep.items())) or "none"


# ------------------------------------------------------------------------ what a device reports


def host_runtimes() -> dict[str, str]:
    """The runtimes mpk's host runner links: the installed wheels (no import), CoreML as the macOS version."""
    out: dict[str, str] = {}
    for dist, key in (("executorch", "executorch"), ("onnxruntime", "onnxruntime")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    if sys.platform == "darwin" and platform.mac_ver()[0]:
        out["coreml"] = f"macos {platform.mac_ver()[0]}"
    return out


_VERSION_NAME = re.compile(r"versionName=(.+)")
_RUNTIME_IN_NAME = re.compile(r"\b(executorch|onnxruntime)[ =]([0-9][0-9A-Za-z.+-]*)")


def parse_app_version_name(dumpsys: str) -> dict[str, str] | None:
    """The runtimes in the app's versionName, from ``dumpsys package org.mpk.bench``.

    The app's versionName is ``0.1.0 (executorch 1.4.1; onnxruntime 1.24.3)``, written by Gradle from the
    same properties as the dependencies it links, so mpk can read it without launching the app.

    >>> parse_app_version_name("versionCode=1\\n    versionName=0.1.0 (executorch 1.4.1; onnxruntime 1.24.3)")
    {'executorch': '1.4.1', 'onnxruntime': '1.24.3'}
    """
    m = _VERSION_NAME.search(dumpsys)
    if not m:
        return None
    found = dict(_RUNTIME_IN_NAME.findall(m.group(1)))
    return found or None


def android_app_runtimes(transport: Any) -> dict[str, str] | None:
    """Ask the device's package manager for the installed app's versionName (None when it does not say)."""
    r = transport.shell(f"dumpsys package {APP_PACKAGE}", timeout=30)
    return parse_app_version_name(r.stdout) if r.exit_code == 0 else None


def device_runtimes(device: Any) -> dict[str, str] | None:
    """What ``device`` (a DeviceSpec that will really run the cells) reports; None when it cannot say.

    Only runners that can report are asked: the host runner (its installed wheels) and the Android app
    (its versionName, from the package manager). The native tools print no version, the iOS app reports its
    versions only in its results, and mpk's virtual device has no package manager dump: none of them is
    refused here, and the apps check again before loading.
    """
    if device.runner == "host":
        return host_runtimes()
    if device.runner == "android_app":
        from runners.drivers.android_app import open_transport

        try:
            t = open_transport(device)
        except MpkError:
            return None
        try:
            return android_app_runtimes(t)
        except (MpkError, OSError):
            return None
        finally:
            t.close()
    return None


# ------------------------------------------------------------------------ mpk bench's pre-flight


def refuse_incompatible(
    plans: Iterable[Any],
    artifacts: list[dict[str, Any]],
    report: Callable[[Any], dict[str, str] | None] = device_runtimes,
) -> None:
    """Raise UsageError (exit 2) naming both versions when a planned device reports a runtime that cannot load
    an artifact. ``mpk bench`` calls this after planning and before it pushes or writes anything."""
    lines = []
    for plan in plans:
        if plan.target is None:
            continue
        runtimes = report(plan.target)
        if runtimes is None:
            continue
        for art in artifacts:
            v = check(art.get("runtime"), runtimes)
            if v.loadable is False:
                lines.append(f"{plan.device.id}: {art['id']}: {v.message}")
    if lines:
        raise UsageError(
            "refusing to benchmark, nothing was pushed: a device's runtime cannot load an artifact:\n  "
            + "\n  ".join(lines),
            hint="install an app built against a runtime that loads these artifacts (android_app/README.md), "
            "or package with the runtime the device has",
        )
