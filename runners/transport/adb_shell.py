"""Talk to adbd directly with the adb-shell library (TCP, or USB when libusb is installed).

No adb server and no Android SDK needed: mpk authenticates with its own RSA key
(``~/.config/mpk/adbkey``, created once). A phone shows "Allow USB debugging?"
the first time; until someone accepts, connecting raises DeviceUnauthorized.
adb-shell has no shell v2, so the exit status rides on a marker line.

A device that goes away is noticed at once: adb-shell's TCP transport reads an
orderly close as zero bytes and would spin on it until the read timeout (one
core at 100% for up to an hour); mpk's transport subclass turns it into a
connection error, so the call fails (and retries reconnect, which a dead
device refuses) within milliseconds. A device that stops answering without
closing fails at the call's timeout, and one that never answers the handshake
is a DeviceTimeout, not "unauthorized".
"""

from __future__ import annotations

import functools
from pathlib import Path

from mpk.errors import DeviceError, DeviceNotFound, DeviceTimeout, DeviceUnauthorized, RuntimeMissing
from runners.transport.adbkey import ensure_key
from runners.transport.base import (
    ShellResult,
    TransientError,
    Transport,
    once_or_retry,
    split_exit_status,
    wrap_exit_status,
)


class AdbShellTransport(Transport):
    """``serial`` is ``host:port`` for TCP (wireless debugging, the virtual device) or a USB serial."""

    def __init__(
        self,
        serial: str,
        *,
        address: str | None = None,
        key_path: Path | None = None,
        connect_timeout: float = 10.0,
        auth_timeout: float = 30.0,
        usb: bool | None = None,
    ) -> None:
        self.serial = serial
        self.address = address or serial
        self.key_path = ensure_key(key_path)
        self.connect_timeout = connect_timeout
        self.auth_timeout = auth_timeout
        self.usb = usb if usb is not None else ":" not in self.address
        self._dev = None

    def _signer(self):
        from adb_shell.auth.sign_cryptography import CryptographySigner

        return CryptographySigner(str(self.key_path))

    def _device(self):
        if self._dev is not None:
            return self._dev
        from adb_shell import exceptions as ex
        from adb_shell.adb_device import AdbDevice, AdbDeviceUsb

        if self.usb:
            try:
                dev = AdbDeviceUsb(serial=self.serial, default_transport_timeout_s=self.connect_timeout)
            except ex.InvalidTransportError:
                raise RuntimeMissing(
                    f"USB device {self.serial}: adb-shell's USB support is not installed",
                    hint="pip install 'adb-shell[usb]' (needs libusb), or use transport: adb_server",
                ) from None
            except Exception as e:
                raise DeviceNotFound(self.serial, f"no USB device: {e}") from None
        else:
            host, _, port = self.address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DeviceNotFound(self.serial, f"address {self.address!r} is not host:port")
            dev = AdbDevice(_closing_tcp_transport(host, int(port)), default_transport_timeout_s=self.connect_timeout)
        asked = []  # adb-shell calls back when it offers our public key: from then on the device is asking a person
        try:
            dev.connect(
                rsa_keys=[self._signer()],
                auth_timeout_s=self.auth_timeout,
                read_timeout_s=self.auth_timeout,
                auth_callback=lambda _dev: asked.append(True),
            )
        except ex.DeviceAuthError as e:
            raise DeviceUnauthorized(self.serial, f"refused mpk's key: {e}") from None
        except (ex.AdbTimeoutError, ex.TcpTimeoutException, TimeoutError):
            dev.close()
            if not asked:
                raise DeviceTimeout(
                    self.serial, f"no answer to the ADB handshake within {self.connect_timeout:.0f}s"
                ) from None
            raise self._unauthorized() from None
        except OSError as e:
            dev.close()
            if asked:  # the device gave up waiting for "Allow" and closed the connection
                raise self._unauthorized() from None
            raise DeviceNotFound(self.serial, f"cannot connect to {self.address}: {e}") from None
        except (ex.InvalidResponseError, ex.InvalidCommandError, ex.AdbConnectionError) as e:
            dev.close()
            raise DeviceError(self.serial, f"ADB handshake failed: {e}", reason="protocol") from None
        self._dev = dev
        return dev

    def _unauthorized(self) -> DeviceUnauthorized:
        # After offering our public key the device is waiting for a person to press "Allow".
        return DeviceUnauthorized(
            self.serial,
            f"did not authorize mpk's key ({self.key_path}.pub) within {self.auth_timeout:.0f}s",
            hint="accept the 'Allow USB debugging?' prompt on the device (or add the key to its adb_keys), then retry",
        )

    def _drop(self) -> None:
        if self._dev is not None:
            try:
                self._dev.close()
            except Exception:
                pass
            self._dev = None

    def connect(self) -> AdbShellTransport:
        self._device()
        return self

    def shell(self, cmd: str, *, timeout: float = 60, retry: bool = True) -> ShellResult:
        from adb_shell import exceptions as ex

        def once() -> ShellResult:
            dev = self._device()
            try:
                # transport_timeout_s bounds every socket read; without it adb-shell uses the 10 s connect
                # timeout, and any command longer than that would look like a dead connection.
                raw = dev.shell(
                    wrap_exit_status(cmd),
                    transport_timeout_s=timeout,
                    read_timeout_s=timeout,
                    timeout_s=timeout,
                    decode=False,
                )
            except (ex.AdbTimeoutError, TimeoutError) as e:
                self._drop()
                raise DeviceTimeout(self.serial, f"shell {cmd!r} took longer than {timeout:.0f}s") from e
            except (ConnectionError, ex.AdbConnectionError, ex.TcpTimeoutException, OSError) as e:
                self._drop()
                raise TransientError(f"connection lost: {e}") from e
            code, out = split_exit_status(raw.decode("utf-8", "replace"))
            if code < 0:
                self._drop()
                raise TransientError("the shell ended without an exit status (connection lost)")
            return ShellResult(code, out, "")

        return once_or_retry(once, retry_=retry, serial=self.serial, what=f"shell {cmd[:60]!r}")

    def _push_raw(self, local: Path, remote: str, *, timeout: float) -> None:
        from adb_shell import exceptions as ex

        dev = self._device()
        try:
            dev.push(str(local), remote, st_mode=0o100644, read_timeout_s=timeout)
        except ex.PushFailedError as e:
            raise DeviceError(self.serial, f"push {remote}: {_text(e)}", reason="push") from None
        except (ConnectionError, ex.AdbConnectionError, ex.AdbTimeoutError, ex.TcpTimeoutException, OSError) as e:
            self._drop()
            raise TransientError(f"push interrupted: {e}") from e

    def _pull_raw(self, remote: str, local: Path, *, timeout: float) -> None:
        from adb_shell import exceptions as ex

        dev = self._device()
        tmp = local.with_name(local.name + ".part")
        try:
            dev.pull(remote, str(tmp), read_timeout_s=timeout)
        except ex.AdbCommandFailureException as e:
            tmp.unlink(missing_ok=True)
            raise DeviceError(self.serial, f"pull {remote}: {_text(e)}", reason="pull") from None
        except (ConnectionError, ex.AdbConnectionError, ex.AdbTimeoutError, ex.TcpTimeoutException, OSError) as e:
            tmp.unlink(missing_ok=True)
            self._drop()
            raise TransientError(f"pull interrupted: {e}") from e
        tmp.replace(local)

    def close(self) -> None:
        self._drop()


def _text(e: Exception) -> str:
    """adb-shell puts the device's FAIL message in the exception as raw bytes."""
    arg = e.args[0] if e.args else ""
    return bytes(arg).decode("utf-8", "replace") if isinstance(arg, bytes | bytearray) else str(e)


def _closing_tcp_transport(host: str, port: int):
    """adb-shell's TcpTransport, except that a closed socket is an error instead of endless empty reads."""
    return _closing_tcp_class()(host, port)


@functools.cache
def _closing_tcp_class() -> type:
    from adb_shell.transport.tcp_transport import TcpTransport

    class ClosingTcpTransport(TcpTransport):
        def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
            return data

    return ClosingTcpTransport
