"""This host and this process, as the pipeline needs them: CPU features that change numeric results, native
libraries' output on fd 2, one background worker for work that releases the GIL, and forked children for
Python-bound work that may run beside the next artifact."""

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


def can_fork() -> bool:
    """True where :class:`Forked` may take work off this process: Linux (macOS's system frameworks are not
    fork-safe once loaded, and Windows has no fork) with more than one CPU to run the child on."""
    return sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1


class ChildFailed(RuntimeError):
    """A :class:`Forked` child ended without sending its result (killed, out of memory, a native crash)."""


class Forked:
    """``fn()`` run in a forked child process, its result (or exception) pickled back through a pipe.

    For Python-bound work that a thread cannot overlap (it would hold the GIL): ExecuTorch's lowering runs
    here while this process builds the next artifact. The child starts with this process's memory (the
    program to lower is not serialised); it exits with ``os._exit`` (no atexit handler of this process runs
    twice) and dies on Ctrl-C without a traceback. Only the forking thread exists in the child: ``fn`` must
    not wait on another thread of this process.
    """

    def __init__(self, fn: Callable[[], Any], *, name: str = "mpk-child") -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child_main, args=(fn, send), name=name, daemon=True)
        self._proc.start()
        send.close()  # the child's end: EOF here once the child is gone
        self._result: tuple[bool, Any] | None = None

    def done(self) -> bool:
        """True when :meth:`result` would not wait."""
        return self._result is not None or self._recv.poll() or not self._proc.is_alive()

    def result(self) -> Any:
        """The child's return value, or its exception raised here. Waits; a signal handler's exception (the
        step time limit) interrupts the wait, and the caller then calls :meth:`cancel`."""
        if self._result is None:
            try:
                self._result = self._recv.recv()
            except EOFError:
                self._proc.join()
                code = self._proc.exitcode
                why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise ChildFailed(f"the child process ended without a result ({why})") from None
            self._proc.join()
            self._recv.close()
        ok, value = self._result
        if ok:
            return value
        raise value

    def cancel(self) -> None:
        """Kill the child if it still runs (SIGKILL: it holds nothing this process needs)."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._recv.close()


def _child_main(fn: Callable[[], Any], send: Any) -> None:
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C reaches the whole process group: just end
    try:
        message: tuple[bool, Any] = (True, fn())
    except BaseException as e:
        try:
            pickle.loads(pickle.dumps(e))
            message = (False, e)
        except Exception:  # an exception type that does not survive pickling: keep its type name and text
            message = (False, RuntimeError(f"{type(e).__name__}: {e}"))
    send.send(message)
    send.close()


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
