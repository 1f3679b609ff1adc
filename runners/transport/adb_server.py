"""Talk to devices through a running adb server (127.0.0.1:5037) using its host protocol on a socket.

Requests are a 4-hex-digit length and an ASCII service name; the server
answers ``OKAY`` or ``FAIL`` + 4-hex length + message (AOSP OVERVIEW.TXT /
SERVICES.TXT). ``host:transport:SERIAL`` switches the socket to a device, after
which ``shell,v2,raw:``, ``shell:`` and ``sync:`` speak to adbd as usual. No
text output of the ``adb`` binary is parsed. ``ANDROID_ADB_SERVER_PORT`` is respected.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from mpk.errors import DeviceError, DeviceNotFound, DeviceTimeout, DeviceUnauthorized, InfraError
from runners.transport import sync_client
from runners.transport.base import (
    ShellResult,
    TransientError,
    Transport,
    once_or_retry,
    split_exit_status,
    wrap_exit_status,
)

DEFAULT_PORT = 5037


def server_address() -> tuple[str, int]:
    port = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    return ("127.0.0.1", int(port) if port.isdigit() else DEFAULT_PORT)


class HostProtocolError(Exception):
    """The adb server answered FAIL; ``message`` is its reason (e.g. "device unauthorized")."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class DeviceEntry:
    serial: str
    state: str  # device | unauthorized | offline | ...
    info: dict[str, str]


class AdbServer:
    """A client of one adb server. Each request opens a fresh socket, as adb's own client does."""

    def __init__(self, host: str | None = None, port: int | None = None, *, timeout: float = 10.0) -> None:
        dh, dp = server_address()
        self.host = host or dh
        self.port = port or dp
        self.timeout = timeout

    def connect(self, timeout: float | None = None) -> socket.socket:
        try:
            return socket.create_connection((self.host, self.port), timeout=timeout or self.timeout)
        except OSError as e:
            raise InfraError(
                f"no adb server on {self.host}:{self.port}: {e.strerror or e}",
                hint="start one with `adb start-server` (or use transport: adb_shell, which needs no server)",
            ) from None

    @staticmethod
    def send_request(sock: socket.socket, service: str) -> None:
        raw = service.encode("utf-8")
        sock.sendall(b"%04x" % len(raw) + raw)
        status = sync_client._recv_exact(sock, 4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            raise HostProtocolError(read_hex_block(sock).decode("utf-8", "replace"))
        raise ConnectionError(f"adb server answered {status!r} to {service!r}")

    def query(self, service: str) -> str:
        """A host service whose answer is one length-prefixed block (host:version, host:devices-l, ...)."""
        with self.connect() as sock:
            self.send_request(sock, service)
            return read_hex_block(sock).decode("utf-8", "replace")

    def version(self) -> int:
        return int(self.query("host:version"), 16)

    def devices(self) -> list[DeviceEntry]:
        out = []
        for line in self.query("host:devices-l").splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            info = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
            out.append(DeviceEntry(parts[0], parts[1], info))
        return out

    def connect_device(self, address: str, *, wait: float = 10.0) -> DeviceEntry:
        """``adb connect ADDRESS`` via ``host:connect:``, then wait until the device leaves 'offline'/'connecting'."""
        answer = self.query(f"host:connect:{address}")
        if "connected" not in answer or answer.startswith(("failed", "unable")):
            raise DeviceNotFound(address, f"adb server could not connect: {answer.strip()}")
        deadline = time.monotonic() + wait
        entry = None
        while time.monotonic() < deadline:
            entry = next((d for d in self.devices() if d.serial == address), None)
            if entry and entry.state in ("device", "unauthorized", "recovery", "sideload"):
                break
            time.sleep(0.1)
        if entry is None:
            raise DeviceNotFound(address, "connected, but the adb server does not list it")
        if entry.state == "unauthorized":
            raise DeviceUnauthorized(address, "the device has not authorized this adb server's key")
        if entry.state != "device":
            raise DeviceTimeout(address, f"still '{entry.state}' after {wait:.0f}s")
        return entry

    def disconnect_device(self, address: str) -> str:
        return self.query(f"host:disconnect:{address}")

    def features(self, serial: str) -> set[str]:
        return set(self.query(f"host-serial:{serial}:features").strip().split(","))

    def open_device(self, serial: str, service: str, timeout: float) -> socket.socket:
        """A socket switched to ``serial`` with ``service`` opened on it; caller closes it."""
        sock = self.connect(timeout)
        try:
            try:
                self.send_request(sock, f"host:transport:{serial}")
            except HostProtocolError as e:
                raise _device_error(serial, e.message) from None
            try:
                self.send_request(sock, service)
            except HostProtocolError as e:
                raise _device_error(serial, e.message) from None
        except BaseException:
            sock.close()
            raise
        return sock


def read_hex_block(sock: socket.socket) -> bytes:
    n = int(sync_client._recv_exact(sock, 4), 16)
    return sync_client._recv_exact(sock, n)


def _device_error(serial: str, message: str) -> DeviceError:
    low = message.lower()
    if "unauthorized" in low:
        return DeviceUnauthorized(serial, message)
    if "not found" in low or "no devices" in low or "offline" in low:
        return DeviceNotFound(serial, message)
    return DeviceError(serial, message)


class AdbServerTransport(Transport):
    """A device the adb server knows (USB serial, ``emulator-5554``, or ``host:port`` after ``connect``)."""

    def __init__(
        self,
        serial: str,
        *,
        address: str | None = None,
        server: AdbServer | None = None,
        connect: bool | None = None,
    ) -> None:
        self.serial = serial
        self.server = server or AdbServer()
        self._features: set[str] | None = None
        # A TCP address the server does not know yet is connected first, like `adb connect`.
        if connect or (connect is None and ":" in (address or serial)):
            if not any(d.serial == serial and d.state == "device" for d in self.server.devices()):
                self.server.connect_device(address or serial)

    @property
    def features(self) -> set[str]:
        if self._features is None:
            try:
                self._features = self.server.features(self.serial)
            except HostProtocolError as e:
                raise _device_error(self.serial, e.message) from None
        return self._features

    def shell(self, cmd: str, *, timeout: float = 60, retry: bool = True) -> ShellResult:
        v2 = "shell_v2" in self.features
        return once_or_retry(lambda: self._shell_once(cmd, timeout, v2), retry_=retry, serial=self.serial,
                             what=f"shell {cmd[:60]!r}")  # fmt: skip

    def _shell_once(self, cmd: str, timeout: float, v2: bool) -> ShellResult:
        service = f"shell,v2,raw:{cmd}" if v2 else f"shell:{wrap_exit_status(cmd)}"
        deadline = time.monotonic() + timeout
        try:
            with self.server.open_device(self.serial, service, timeout) as sock:
                if v2:
                    return _read_shell_v2(sock, deadline)
                chunks = []
                while chunk := _recv_until(sock, deadline):
                    chunks.append(chunk)
                code, out = split_exit_status(b"".join(chunks).decode("utf-8", "replace"))
                if code < 0:
                    raise ConnectionError("the shell ended without an exit status")
                return ShellResult(code, out, "")
        except TimeoutError as e:
            raise DeviceTimeout(self.serial, f"shell {cmd!r} took longer than {timeout:.0f}s") from e
        except (ConnectionError, OSError) as e:
            if isinstance(e, DeviceError):
                raise
            raise TransientError(f"connection lost: {e}") from e

    def _sync(self, timeout: float) -> socket.socket:
        return self.server.open_device(self.serial, "sync:", timeout)

    def _push_raw(self, local: Path, remote: str, *, timeout: float) -> None:
        try:
            with self._sync(timeout) as sock:
                sync_client.push(sock, local, remote)
                sync_client.quit_(sock)
        except sync_client.SyncFailed as e:
            raise DeviceError(self.serial, f"push {remote}: {e}", reason="push") from None
        except (ConnectionError, TimeoutError) as e:
            raise TransientError(f"push interrupted: {e}") from e

    def _pull_raw(self, remote: str, local: Path, *, timeout: float) -> None:
        try:
            with self._sync(timeout) as sock:
                sync_client.pull(sock, remote, local)
                sync_client.quit_(sock)
        except sync_client.SyncFailed as e:
            raise DeviceError(self.serial, f"pull {remote}: {e}", reason="pull") from None
        except (ConnectionError, TimeoutError) as e:
            raise TransientError(f"pull interrupted: {e}") from e

    def stat(self, remote: str, *, timeout: float = 30) -> tuple[int, int, int]:
        with self._sync(timeout) as sock:
            out = sync_client.stat(sock, remote)
            sync_client.quit_(sock)
            return out


def _recv_until(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    return sock.recv(1 << 16)


def _read_shell_v2(sock: socket.socket, deadline: float) -> ShellResult:
    """Shell protocol v2 frames: 1-byte id (1 stdout, 2 stderr, 3 exit) + u32 length + data."""
    buf = bytearray()
    out, err = bytearray(), bytearray()
    code = None
    while True:
        while len(buf) >= 5:
            ident, n = struct.unpack("<BI", buf[:5])
            if len(buf) < 5 + n:
                break
            data = bytes(buf[5 : 5 + n])
            del buf[: 5 + n]
            if ident == 1:
                out += data
            elif ident == 2:
                err += data
            elif ident == 3 and data:
                code = data[0]
        chunk = _recv_until(sock, deadline)
        if not chunk:
            break
        buf += chunk
    if code is None:
        raise ConnectionError("shell ended without an exit status")
    return ShellResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
