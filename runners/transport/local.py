"""The host itself as a device: shell via subprocess, push/pull as copies under a root directory.

Remote paths are taken relative to ``root`` (``/data/local/tmp/x`` becomes
``ROOT/data/local/tmp/x``) so harness code written for Android paths works
unchanged on the host device, and never writes outside ``root``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from mpk.errors import DeviceError, DeviceTimeout
from mpk.files import sha256_file
from runners.transport.base import ShellResult, Transport


class LocalTransport(Transport):
    def __init__(self, serial: str = "host", *, root: Path | None = None, **_ignored: object) -> None:
        self.serial = serial
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "mpk-local-device"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, remote: str) -> Path:
        """Host path for a device path; refuses paths that leave ``root``."""
        host = Path(os.path.realpath(self.root / remote.lstrip("/")))
        root = Path(os.path.realpath(self.root))
        if host != root and root not in host.parents:
            raise DeviceError(self.serial, f"path {remote!r} is outside the local device root {root}")
        return host

    def shell(self, cmd: str, *, timeout: float = 60, retry: bool = True) -> ShellResult:
        try:
            p = subprocess.run(
                cmd, shell=True, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise DeviceTimeout(self.serial, f"shell {cmd!r} took longer than {timeout:.0f}s") from None
        return ShellResult(p.returncode, p.stdout, p.stderr)

    def sha256(self, remote: str) -> str | None:
        p = self.path(remote)
        return sha256_file(p) if p.is_file() else None

    def _push_raw(self, local: Path, remote: str, *, timeout: float) -> None:
        dst = self.path(remote)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dst)

    def _pull_raw(self, remote: str, local: Path, *, timeout: float) -> None:
        src = self.path(remote)
        if not src.is_file():
            raise DeviceError(self.serial, f"pull {remote}: no such file", reason="pull")
        shutil.copyfile(src, local)

    def getprop(self) -> dict[str, str]:
        """Host facts under Android property names, so callers need no special case for the host."""
        return {
            "ro.product.model": platform.node() or "host",
            "ro.product.cpu.abi": platform.machine(),
            "ro.build.version.release": platform.release(),
            "ro.mpk.host": "1",
        }
