"""The virtual device's filesystem: Android paths mapped into one host directory.

Every path the device is asked about goes through :meth:`SandboxFS.resolve`,
which resolves ``..`` and symlinks on the host and refuses anything that lands
outside the root. A client that plants a symlink to ``/etc`` or asks for
``/data/../../..`` gets "Permission denied", never a host file, and the answer
is the same whether the host file exists or not. Reads and writes open the
resolved path with ``O_NOFOLLOW`` so a link swapped in afterwards is not
followed either. Writes keep ``reserve_bytes`` of the host disk free.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import stat
from pathlib import Path

#: Suffix of a file being received by sync SEND; never left behind (see sync.py and :meth:`SandboxFS.sweep_temp`).
SYNC_TMP_SUFFIX = ".mpk-sync-tmp"
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC  # Linux and macOS; mpk runs on nothing else

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
    def __init__(self, root: Path, *, reserve_bytes: int = 64 << 20) -> None:
        self.root = Path(os.path.realpath(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.reserve_bytes = reserve_bytes
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
        if not self.inside(host):
            raise SandboxEscape(path)
        return host

    def inside(self, host: Path) -> bool:
        return host == self.root or self.root in host.parents

    def ensure_space(self, nbytes: int) -> None:
        """Raise ENOSPC when writing ``nbytes`` more would leave less than ``reserve_bytes`` free on the host."""
        st = os.statvfs(self.root)
        if st.f_bavail * st.f_frsize - nbytes < self.reserve_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_read(self, path: str, cwd: str = "/") -> int:
        """A read-only fd on the regular file at Android ``path`` (never through a symlink swapped in later)."""
        fd = os.open(self.resolve(path, cwd), os.O_RDONLY | _NOFOLLOW)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
            if not stat.S_ISREG(mode):
                raise OSError(errno.EACCES, "not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_bytes(self, path: str, cwd: str = "/", *, limit: int) -> bytes:
        """The content of a regular file; EFBIG when it is larger than ``limit``."""
        with os.fdopen(self.open_read(path, cwd), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        return data

    def write_bytes(self, path: str, data: bytes, cwd: str = "/", *, append: bool = False) -> None:
        host = self.resolve(path, cwd)
        self.ensure_space(len(data))
        flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        with os.fdopen(os.open(host, flags, 0o644), "wb") as f:
            f.write(data)

    def sweep_temp(self) -> int:
        """Delete sync SEND temp files a killed server left behind; returns how many."""
        n = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.endswith(SYNC_TMP_SUFFIX):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        n += 1
                    except OSError:
                        pass
        return n

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
