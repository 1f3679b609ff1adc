"""This host and this process, as the pipeline needs them: CPU features that change numeric results, native
libraries' output on fd 2, and one background worker for work that releases the GIL."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any


class Background:
    """One daemon worker thread for work that releases the GIL (zstd). Daemon: Ctrl-C never waits for it."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mpk-background", daemon=True)
            self._thread.start()
        self._queue.put((fut, fn))
        return fut

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to whoever waits on the future
                fut.set_exception(e)

    def close(self) -> None:
        """Stop after the queued work; what is still queued or running is abandoned with the thread."""
        if self._thread is not None:
            self._queue.put(None)


_CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512", "vnni", "amx", "asimd", "sve", "i8mm", "bf16")


@functools.cache
def cpu_fingerprint() -> str:
    """The host's SIMD features that change float and int8 kernel results (AVX2 vs AVX-512 VNNI, ...)."""
    import platform

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(f for f in line.split(":", 1)[1].split() if f.startswith(_CPU_FEATURES))
                break
    except OSError:
        pass
    return platform.machine() + ":" + ",".join(sorted(flags))


@contextlib.contextmanager
def native_stderr_quiet(enabled: bool) -> Iterator[None]:
    """Send what native libraries print straight to fd 2 (ExecuTorch's ``[cpuinfo_utils.cpp:100] Reading
    file ...`` lines) to a scratch file while ``enabled``. Python exceptions pass through untouched."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (an embedding host): nothing to quiet
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class StepTimeout(BaseException):
    """A step of ``mpk package`` ran past its time limit (see :func:`time_limit`).

    A BaseException, like KeyboardInterrupt: the libraries and mpk's own guards catch ``Exception`` to carry on
    (bias correction keeps the uncorrected model when correction fails), and a timeout caught there would be
    swallowed and the step would run on unbounded.
    """


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`StepTimeout` in the main thread when the block runs past ``seconds`` (None or 0: no limit).

    SIGALRM interrupts Python code between bytecodes, which is where lowering spends its time (ExecuTorch's
    partitioner and per-partition lowering are Python); a native call that never returns is not interrupted.
    Off the main thread (signals go there only) the block runs unbounded.
    """
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise StepTimeout(f"{what} did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
