"""The device side of ``sync:`` (AOSP ``SYNC.TXT``): STAT, LIST, SEND, RECV, QUIT.

Requests are a 4-byte id, a little-endian u32 length and that many bytes of
path. File bodies travel as DATA chunks of at most 64 KiB, ended by DONE (whose
length field carries the mtime on SEND). Every path goes through the sandbox.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import struct
from typing import Protocol

from runners.vdevice.sandbox import SandboxEscape, SandboxFS

log = logging.getLogger("mpk.vdevice")

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024
_ID_LEN = struct.Struct("<4sI")
_STAT = struct.Struct("<4sIII")
_DENT = struct.Struct("<4sIIII")


class ByteStream(Protocol):
    def read_exact(self, n: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...


class SyncError(Exception):
    pass


def serve_sync(stream: ByteStream, fs: SandboxFS) -> None:
    """Answer sync requests until QUIT or the stream closes."""
    while True:
        try:
            ident, length = _ID_LEN.unpack(stream.read_exact(8))
        except EOFError:
            return
        if ident == b"QUIT":
            return
        if length > MAX_PATH:
            raise SyncError(f"{ident!r} path length {length} > {MAX_PATH}")
        arg = stream.read_exact(length).decode("utf-8", "surrogateescape")
        if ident == b"STAT":
            _stat(stream, fs, arg)
        elif ident == b"LIST":
            _list(stream, fs, arg)
        elif ident == b"SEND":
            _send(stream, fs, arg)
        elif ident == b"RECV":
            _recv(stream, fs, arg)
        else:
            raise SyncError(f"unknown sync request {ident!r}")


def _fail(stream: ByteStream, message: str) -> None:
    msg = message.encode()
    stream.write(_ID_LEN.pack(b"FAIL", len(msg)) + msg)


def _stat(stream: ByteStream, fs: SandboxFS, path: str) -> None:
    try:
        st = os.stat(fs.resolve(path))
        stream.write(_STAT.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
    except (OSError, SandboxEscape):
        stream.write(_STAT.pack(b"STAT", 0, 0, 0))  # protocol v1: all-zero means "does not exist"


def _list(stream: ByteStream, fs: SandboxFS, path: str) -> None:
    try:
        host = fs.resolve(path)
        names = sorted(os.listdir(host))
    except (OSError, SandboxEscape):
        names, host = [], None
    out = bytearray()
    for name in names:
        try:
            st = os.lstat(host / name)  # type: ignore[operator]
        except OSError:
            continue
        raw = name.encode("utf-8", "surrogateescape")
        out += _DENT.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw
        if len(out) > SYNC_DATA_MAX:
            stream.write(bytes(out))
            out.clear()
    stream.write(bytes(out) + _DENT.pack(b"DONE", 0, 0, 0, 0))


def _send(stream: ByteStream, fs: SandboxFS, arg: str) -> None:
    path, _, mode_s = arg.rpartition(",")
    if not path:
        path, mode_s = arg, "33188"
    try:
        mode = int(mode_s)
    except ValueError:
        mode = 0o100644
    error = None
    host = tmp = None
    f = None
    try:
        if stat_mod.S_ISLNK(mode):
            raise OSError("symlinks cannot be pushed to mpk's virtual device")
        host = fs.resolve(path)
        if host.is_dir():
            raise IsADirectoryError(f"{path}: is a directory")
        host.parent.mkdir(parents=True, exist_ok=True)  # adbd creates missing parents (fixed_push_mkdir)
        fs.resolve(fs.to_android(host.parent))  # the created parent must still be inside
        tmp = host.with_name(f".{host.name}.mpk-sync-tmp")
        f = open(tmp, "wb")
    except (OSError, SandboxEscape) as e:
        error = f"couldn't create file: {'Permission denied' if isinstance(e, SandboxEscape) else e}"
        log.warning("sync SEND %s refused: %s", path, error)
    mtime = 0
    try:
        # Consume DATA until DONE even after an error, so the client reads our FAIL instead of a broken pipe.
        while True:
            ident, length = _ID_LEN.unpack(stream.read_exact(8))
            if ident == b"DONE":
                mtime = length
                break
            if ident != b"DATA" or length > SYNC_DATA_MAX:
                raise SyncError(f"SEND: expected DATA/DONE of <= {SYNC_DATA_MAX} bytes, got {ident!r} {length}")
            chunk = stream.read_exact(length)
            if f is not None:
                f.write(chunk)
    finally:
        if f is not None:
            f.close()
    if error is None and tmp is not None and host is not None:
        os.chmod(tmp, mode & 0o777 or 0o644)
        if mtime:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, host)
        stream.write(_ID_LEN.pack(b"OKAY", 0))
    else:
        if tmp is not None and tmp.exists():
            tmp.unlink()
        _fail(stream, error or "write failed")


def _recv(stream: ByteStream, fs: SandboxFS, path: str) -> None:
    try:
        host = fs.resolve(path)
        f = open(host, "rb")
    except SandboxEscape:
        _fail(stream, f"open failed: Permission denied: {path}")
        return
    except OSError as e:
        _fail(stream, f"open failed: {e.strerror or e}")
        return
    with f:
        while chunk := f.read(SYNC_DATA_MAX):
            stream.write(_ID_LEN.pack(b"DATA", len(chunk)) + chunk)
    stream.write(_ID_LEN.pack(b"DONE", 0))
