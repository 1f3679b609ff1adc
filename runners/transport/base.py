"""What mpk needs from a device connection, whatever carries it.

Every transport gives the same five operations. ``push`` is content-addressed:
it asks the device for ``sha256sum`` first and sends nothing when the file is
already there, then checks the device's sha256 after sending (and retries once)
so a truncated push never becomes a wrong benchmark.
"""

from __future__ import annotations

import abc
import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mpk.errors import DeviceError, DeviceTimeout
from mpk.files import sha256_file

log = logging.getLogger("mpk.transport")
T = TypeVar("T")

_SHA = re.compile(r"^([0-9a-f]{64})\b")


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, serial: str, what: str) -> ShellResult:
        """Raise DeviceError naming ``what`` when the command failed; returns self for chaining."""
        if self.exit_code != 0:
            detail = (self.stderr or self.stdout).strip().splitlines()[-1:] or [""]
            raise DeviceError(serial, f"{what} failed (exit {self.exit_code}): {detail[0]}")
        return self


class TransientError(Exception):
    """A failure worth retrying (connection reset, a timeout mid-transfer)."""


def retry(fn: Callable[[], T], *, serial: str, what: str, attempts: int = 3, backoff: float = 0.5) -> T:
    """Call ``fn``; on TransientError wait backoff, 2*backoff, ... and retry, ``attempts`` tries in all."""
    for i in range(attempts):
        try:
            return fn()
        except TransientError as e:
            if i == attempts - 1:
                if isinstance(e.__cause__, TimeoutError):
                    raise DeviceTimeout(serial, f"{what}: {e}") from e
                raise DeviceError(serial, f"{what}: {e} (after {attempts} tries)", reason="transient") from e
            log.info("%s: %s failed (%s); retrying", serial, what, e)
            time.sleep(backoff * (2**i))
    raise AssertionError("unreachable")


def once_or_retry(fn: Callable[[], T], *, retry_: bool, serial: str, what: str) -> T:
    """``retry(fn)``, or with ``retry_=False`` (a command that must not run twice) one try whose lost
    connection is a DeviceError at once: nothing is repeated and the caller learns the device is gone."""
    if retry_:
        return retry(fn, serial=serial, what=what)
    try:
        return fn()
    except TransientError as e:
        raise DeviceError(serial, f"{what}: {e}", reason="transient") from e


class Transport(abc.ABC):
    """A connection to one device. Subclasses implement the ``_raw`` operations; base adds checks and retries."""

    serial: str

    @abc.abstractmethod
    def shell(self, cmd: str, *, timeout: float = 60, retry: bool = True) -> ShellResult:
        """Run ``cmd`` in the device's shell; exit status, stdout and stderr come back separately when possible.

        ``retry=False`` for commands that must not run twice (``am start`` of a whole benchmark): a
        dropped connection then fails instead of starting the benchmark again.
        """

    @abc.abstractmethod
    def _push_raw(self, local: Path, remote: str, *, timeout: float) -> None:
        """Send the bytes of ``local`` to ``remote`` (mode 0644); raise TransientError on retryable failures."""

    @abc.abstractmethod
    def _pull_raw(self, remote: str, local: Path, *, timeout: float) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional for transports with nothing to release
        """Release the connection. Safe to call twice."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared behaviour ---------------------------------------------------------------------------------------
    def sha256(self, remote: str) -> str | None:
        """The device's sha256 of ``remote``, or None when it does not exist (or the device lacks sha256sum)."""
        r = self.shell(f"sha256sum {shlex.quote(remote)}", timeout=120)
        m = _SHA.match(r.stdout.strip())
        return m.group(1) if r.exit_code == 0 and m else None

    def push(self, local: Path, remote: str, *, timeout: float = 300) -> bool:
        """Copy ``local`` to ``remote``; False when the device already had identical content (nothing sent)."""
        local = Path(local)
        if not local.is_file():
            raise DeviceError(self.serial, f"push: local file {local} does not exist")
        want = sha256_file(local)
        if self.sha256(remote) == want:
            log.debug("%s: %s already on device, skipped", self.serial, remote)
            return False
        for attempt in (1, 2):
            retry(lambda: self._push_raw(local, remote, timeout=timeout), serial=self.serial, what=f"push {remote}")
            got = self.sha256(remote)
            if got == want:
                return True
            log.warning("%s: push %s: sha256 %s != %s (attempt %d)", self.serial, remote, got, want, attempt)
        raise DeviceError(
            self.serial, f"push {remote}: device sha256 {got} does not match local {want} after 2 tries", reason="push"
        )

    def pull(self, remote: str, local: Path, *, timeout: float = 300) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        retry(lambda: self._pull_raw(remote, local, timeout=timeout), serial=self.serial, what=f"pull {remote}")

    def getprop(self) -> dict[str, str]:
        """All system properties (``getprop`` output ``[key]: [value]`` parsed)."""
        r = self.shell("getprop", timeout=30).check(self.serial, "getprop")
        return parse_getprop(r.stdout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.serial}>"


def parse_getprop(text: str) -> dict[str, str]:
    props = {}
    for m in re.finditer(r"^\[([^\]]+)\]: \[(.*?)\]\s*$", text, re.M):
        props[m.group(1)] = m.group(2)
    return props


#: Appended to a command on shells without exit-status reporting (no shell v2). The literal newline keeps the
#: marker on its own line even when the command's output does not end in one.
EXIT_MARKER = "__MPK_EXIT="


def wrap_exit_status(cmd: str) -> str:
    """``sh -c CMD`` so an ``exit N`` inside CMD ends only the inner shell and the marker still prints."""
    return f'sh -c {shlex.quote(cmd)}; echo "\n{EXIT_MARKER}$?"'


def split_exit_status(output: str) -> tuple[int, str]:
    """Undo :func:`wrap_exit_status`: (exit status, the command's own output). -1 when the marker is missing
    (the shell ended before the command did: transports treat that as a lost connection)."""
    norm = output.replace("\r\n", "\n")
    idx = norm.rfind("\n" + EXIT_MARKER)
    if idx < 0:
        return -1, norm
    tail = norm[idx + 1 + len(EXIT_MARKER) :].strip()
    try:
        code = int(tail.split()[0])
    except (ValueError, IndexError):
        return -1, norm
    return code, norm[:idx]
