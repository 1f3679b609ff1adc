"""The client side of ADB's ``sync:`` service (AOSP SYNC.TXT), over any connected byte socket.

Used by the adb_server transport after ``host:transport:SERIAL`` + ``sync:``;
the same bytes flow to a phone's adbd. Files go up as ``SEND "path,mode"``,
DATA chunks of at most 64 KiB, then DONE carrying the mtime; the device
answers OKAY or FAIL with a message.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

SYNC_DATA_MAX = 64 * 1024
_ID_LEN = struct.Struct("<4sI")
_STAT = struct.Struct("<III")


class SyncFailed(Exception):
    """The device answered FAIL (message included): a real refusal, not worth retrying."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("device closed the sync connection")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, ident: bytes, arg: str) -> None:
    raw = arg.encode("utf-8")
    if len(raw) > 1024:
        raise SyncFailed(f"path longer than 1024 bytes: {arg[:60]}...")
    sock.sendall(_ID_LEN.pack(ident, len(raw)) + raw)


def stat(sock: socket.socket, remote: str) -> tuple[int, int, int]:
    """(mode, size, mtime); all zero when the path does not exist."""
    _request(sock, b"STAT", remote)
    ident = _recv_exact(sock, 4)
    if ident != b"STAT":
        raise ConnectionError(f"expected STAT, got {ident!r}")
    return _STAT.unpack(_recv_exact(sock, 12))


def push(sock: socket.socket, local: Path, remote: str, mode: int = 0o100644) -> None:
    _request(sock, b"SEND", f"{remote},{mode}")
    with open(local, "rb") as f:
        while chunk := f.read(SYNC_DATA_MAX):
            sock.sendall(_ID_LEN.pack(b"DATA", len(chunk)) + chunk)
    sock.sendall(_ID_LEN.pack(b"DONE", int(os.stat(local).st_mtime or time.time())))
    ident, length = _ID_LEN.unpack(_recv_exact(sock, 8))
    if ident == b"FAIL":
        raise SyncFailed(_recv_exact(sock, length).decode("utf-8", "replace"))
    if ident != b"OKAY":
        raise ConnectionError(f"expected OKAY after SEND, got {ident!r}")


def pull(sock: socket.socket, remote: str, local: Path) -> None:
    """Write ``remote`` to ``local`` via a ``.part`` file, renamed only when DONE arrives."""
    _request(sock, b"RECV", remote)
    tmp = local.with_name(local.name + ".part")
    try:
        with open(tmp, "wb") as f:
            while True:
                ident, length = _ID_LEN.unpack(_recv_exact(sock, 8))
                if ident == b"DONE":
                    break
                if ident == b"FAIL":
                    raise SyncFailed(_recv_exact(sock, length).decode("utf-8", "replace"))
                if ident != b"DATA" or length > SYNC_DATA_MAX:
                    raise ConnectionError(f"expected DATA/DONE, got {ident!r} ({length} bytes)")
                f.write(_recv_exact(sock, length))
        tmp.replace(local)
    finally:
        tmp.unlink(missing_ok=True)


def quit_(sock: socket.socket) -> None:
    try:
        sock.sendall(_ID_LEN.pack(b"QUIT", 0))
    except OSError:
        pass
