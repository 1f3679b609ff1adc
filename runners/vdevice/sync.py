"""The device side of ``sync:`` (AOSP ``SYNC.TXT``): STAT, LIST, SEND, RECV, QUIT.

Requests are a 4-byte id, a little-endian u32 length and that many bytes of
path (at most 1024). File bodies travel as DATA chunks of at most 64 KiB,
ended by DONE (whose length field carries the mtime on SEND). Every path goes
through the sandbox.

SEND writes to ``.NAME.mpk-sync-tmp`` beside the target and renames it only
after DONE, so a half-sent file never replaces a good one. Whatever goes wrong
(no permission, a file larger than ``max_file_bytes``, the host disk nearly
full, a malformed DATA header, the client vanishing mid-file) the temp file is
removed, and if the client is still there it gets ``FAIL`` with the reason,
after which the sync service ends, as adbd's does. Like adbd, the rest of a
refused file is read and discarded up to DONE first, so a client that writes
the whole file before reading sees the FAIL, not a broken pipe.
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
import struct
from typing import Protocol

from runners.vdevice.sandbox import SYNC_TMP_SUFFIX, SandboxEscape, SandboxFS

log = logging.getLogger("mpk.vdevice")

SYNC_DATA_MAX = 64 * 1024
MAX_PATH = 1024
#: default SEND limit per file (VirtualDevice(max_push_bytes=...) changes it)
MAX_FILE_BYTES = 2 << 30
_SPACE_CHECK_EVERY = 16 << 20
_ID_LEN = struct.Struct("<4sI")
_STAT = struct.Struct("<4sIII")
_DENT = struct.Struct("<4sIIII")


class ByteStream(Protocol):
    def read_exact(self, n: int) -> bytes: ...
    def write(self, data: bytes) -> None: ...


def serve_sync(stream: ByteStream, fs: SandboxFS, *, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Answer sync requests until QUIT, the stream closes, or a request fails (FAIL is sent first)."""
    while True:
        try:
            ident, length = _ID_LEN.unpack(stream.read_exact(8))
        except EOFError:
            return
        if ident == b"QUIT":
            return
        if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
            _fail(stream, f"unknown sync request {ident!r}")
            return
        if length > MAX_PATH:
            _fail(stream, f"path too long ({length} > {MAX_PATH} bytes)")
            return
        arg = stream.read_exact(length).decode("utf-8", "surrogateescape")
        if ident == b"STAT":
            _stat(stream, fs, arg)
        elif ident == b"LIST":
            _list(stream, fs, arg)
        elif ident == b"RECV":
            _recv(stream, fs, arg)
        elif not _send(stream, fs, arg, max_file_bytes):
            return


def _fail(stream: ByteStream, message: str) -> None:
    msg = message.encode("utf-8", "replace")[:1024]
    stream.write(_ID_LEN.pack(b"FAIL", len(msg)) + msg)


def _stat(stream: ByteStream, fs: SandboxFS, path: str) -> None:
    try:
        st = os.stat(fs.resolve(path))
        stream.write(_STAT.pack(b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF))
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
        out += _DENT.pack(b"DENT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF, len(raw)) + raw
        if len(out) > SYNC_DATA_MAX:
            stream.write(bytes(out))
            out.clear()
    stream.write(bytes(out) + _DENT.pack(b"DONE", 0, 0, 0, 0))


def _parse_mode(text: str) -> int | None:
    """adbd reads the mode with strtoul(..., 0): decimal, 0-prefixed octal or 0x hex."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]{1,8}", text):
        return int(text, 16)
    if re.fullmatch(r"0[0-7]{1,11}", text):
        return int(text, 8)
    if re.fullmatch(r"[1-9]\d{0,9}|0", text):
        return int(text)
    return None


def _send(stream: ByteStream, fs: SandboxFS, arg: str, max_bytes: int) -> bool:
    """One SEND; True when the file was stored (OKAY sent), False after a FAIL (the service then ends)."""
    path, comma, mode_s = arg.rpartition(",")
    mode = _parse_mode(mode_s) if comma else None
    if not comma or not path or mode is None:
        _fail(stream, "missing or bad ',MODE' in SEND" if path or not comma else "missing path in SEND")
        return False
    error: str | None = None
    host = tmp = None
    f = None
    committed = False
    try:
        try:
            if stat_mod.S_ISLNK(mode):
                raise PermissionError("symlinks cannot be pushed to mpk's virtual device")
            host = fs.resolve(path)
            if host.is_dir():
                raise IsADirectoryError("Is a directory")
            host.parent.mkdir(parents=True, exist_ok=True)  # adbd creates missing parents (fixed_push_mkdir)
            fs.resolve(fs.to_android(host.parent))  # the created parent must still be inside
            fs.ensure_space(0)
            tmp = host.with_name(f".{host.name}{SYNC_TMP_SUFFIX}")
            f = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "wb")
        except (OSError, SandboxEscape) as e:
            reason = "Permission denied" if isinstance(e, SandboxEscape) else (e.strerror or str(e))
            error = f"couldn't create file: {reason}"
        total, mtime, since_check = 0, 0, 0
        while True:
            ident, length = _ID_LEN.unpack(stream.read_exact(8))
            if ident == b"DONE":
                mtime = length
                break
            if ident != b"DATA" or length > SYNC_DATA_MAX:
                # adbd stops reading here too: the stream is out of step, nothing after it can be trusted
                _fail(stream, error or f"invalid data message ({ident!r}, {length} bytes)")
                return False
            chunk = stream.read_exact(length)
            total += length
            if error is not None:
                continue  # drain and discard, as adbd does, so the client reads our FAIL
            if total > max_bytes:
                error = f"file too large: mpk's virtual device accepts at most {max_bytes} bytes per file"
                continue
            since_check += length
            try:
                if since_check >= _SPACE_CHECK_EVERY:
                    fs.ensure_space(since_check)
                    since_check = 0
                f.write(chunk)  # type: ignore[union-attr]
            except OSError as e:
                error = f"write failed: {e.strerror or e}"
        if error is None:
            try:
                f.close()  # type: ignore[union-attr]
                os.chmod(tmp, (mode & 0o777) | 0o600)  # type: ignore[arg-type]
                if mtime:
                    os.utime(tmp, (mtime, mtime))  # type: ignore[arg-type]
                os.replace(tmp, host)  # type: ignore[arg-type]
                committed = True
            except OSError as e:
                error = f"write failed: {e.strerror or e}"
        if error is not None:
            log.warning("vdevice: sync SEND %s refused: %s", path[:200], error)
            _fail(stream, error)
            return False
        stream.write(_ID_LEN.pack(b"OKAY", 0))
        return True
    finally:
        if f is not None:
            f.close()
        if tmp is not None and not committed:
            try:
                tmp.unlink()
            except OSError:
                pass


def _recv(stream: ByteStream, fs: SandboxFS, path: str) -> None:
    try:
        fd = fs.open_read(path)
    except SandboxEscape:
        _fail(stream, f"open failed: Permission denied: {path[:200]}")
        return
    except OSError as e:
        _fail(stream, f"open failed: {e.strerror or e}")
        return
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(SYNC_DATA_MAX):
            stream.write(_ID_LEN.pack(b"DATA", len(chunk)) + chunk)
    stream.write(_ID_LEN.pack(b"DONE", 0))
