"""The virtual device's filesystem: Android paths mapped into one host directory.

Every path the device is asked about goes through :meth:`SandboxFS.resolve`,
which resolves ``..`` and symlinks on the host and refuses anything that lands
outside the root. A client that pushes a symlink to ``/etc`` or asks for
``/data/../../..`` gets "Permission denied", never a host file.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from pathlib import Path

#: Directories every Android device has and the harness writes to or reads from.
STANDARD_DIRS = (
    "data/local/tmp",
    "data/data/org.mpk.bench/files",
    "data/app",
    "sdcard",
    "proc",
    "sys/class/thermal",
    "sys/devices/system/cpu",
    "system/bin",
)


class SandboxEscape(PermissionError):
    """An Android path resolved to a host path outside the sandbox root."""


class SandboxFS:
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        for d in STANDARD_DIRS:
            (self.root / d).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def normalize(path: str, cwd: str = "/") -> str:
        """Absolute, ``..``-collapsed Android path (lexically, like the kernel sees a string)."""
        if not path.startswith("/"):
            path = posixpath.join(cwd, path)
        norm = posixpath.normpath(path)
        return "/" + norm.lstrip("/") if norm != "/" else "/"

    def resolve(self, path: str, cwd: str = "/") -> Path:
        """Host path for Android ``path``; raises SandboxEscape if it (or a symlink in it) leaves the root."""
        if "\0" in path:
            raise SandboxEscape(path)
        android = self.normalize(path, cwd)
        host = Path(os.path.realpath(self.root / android.lstrip("/")))
        if host != self.root and self.root not in host.parents:
            raise SandboxEscape(path)
        return host

    def to_android(self, host: Path) -> str:
        rel = Path(os.path.realpath(host)).relative_to(self.root)
        return "/" + rel.as_posix() if str(rel) != "." else "/"

    def glob(self, pattern: str, cwd: str = "/") -> list[str]:
        """Expand ``*``/``?``/``[..]`` in an Android path, inside the sandbox only; sorted like sh does."""
        android = self.normalize(pattern, cwd)
        parts = [p for p in android.split("/") if p]
        matches = ["/"]
        for part in parts:
            nxt: list[str] = []
            for base in matches:
                if not any(c in part for c in "*?["):
                    nxt.append(posixpath.join(base, part))
                    continue
                try:
                    host = self.resolve(base)
                    names = sorted(os.listdir(host))
                except (OSError, SandboxEscape):
                    continue
                nxt.extend(posixpath.join(base, n) for n in names if fnmatch.fnmatchcase(n, part))
            matches = nxt
        out = []
        for m in matches:
            try:
                if self.resolve(m).exists():
                    out.append(m)
            except SandboxEscape:
                continue
        return out
