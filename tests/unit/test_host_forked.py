"""packager.host.Forked: work in a forked child, its result or its error back here, and nothing left running.

Real processes (fork, pipes, signals); Linux only, like the path in mpk that uses it (``can_fork``).
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import sys
import time

import pytest

from mpk.errors import ConfigError, ExportError, ModelError
from packager.host import ChildFailed, Forked, StepTimeout, time_limit

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk forks only on Linux")


def test_result_comes_back_from_the_child_and_the_child_is_a_different_process() -> None:
    parent = os.getpid()
    big = list(range(100_000))  # the child sees this process's memory without it being sent
    child = Forked(lambda: (os.getpid(), sum(big), "x" * 200_000))  # more than a pipe buffer holds
    pid, total, text = child.result()
    assert pid != parent and total == sum(big) and len(text) == 200_000
    assert child.done()
    child.cancel()  # after a result: nothing to kill, no error


def test_an_mpk_error_arrives_as_itself_with_its_attributes_and_os_cause() -> None:
    def fail() -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise ExportError("executorch", "writing the .pte failed", hint="free some space") from e

    child = Forked(fail)
    with pytest.raises(ExportError) as info:
        child.result()
    e = info.value
    assert e.backend == "executorch" and e.hint == "free some space" and e.exit_code == ModelError.exit_code
    assert e.format_message() == "executorch: writing the .pte failed\n  hint: free some space"
    assert isinstance(e.__cause__, OSError) and e.__cause__.errno == errno.ENOSPC


def test_every_mpk_error_survives_pickling() -> None:
    """The subclasses take different constructor arguments; none may turn into a TypeError on the way back."""
    errors = [ConfigError("devices.yaml", ["devices[0].serial: missing", "budgets: unknown key"]),
              ExportError("onnx", "boom"), ModelError("bad model", hint="h")]  # fmt: skip
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and back.format_message() == e.format_message() and str(back) == str(e)


def test_an_exception_that_cannot_be_pickled_keeps_its_type_name_and_text() -> None:
    class Local(Exception):  # defined in a function: pickle cannot find it by name
        pass

    def fail() -> None:
        raise Local("the partitioner gave up")

    with pytest.raises(RuntimeError, match=r"^Local: the partitioner gave up$"):
        Forked(fail).result()


def test_a_child_that_dies_is_reported_not_waited_for() -> None:
    child = Forked(lambda: os.kill(os.getpid(), signal.SIGKILL))
    with pytest.raises(ChildFailed, match=r"without a result \(signal 9\)"):
        child.result()


def test_a_time_limit_interrupts_the_wait_and_cancel_kills_the_child() -> None:
    child = Forked(lambda: time.sleep(60))
    t0 = time.monotonic()
    with pytest.raises(StepTimeout), time_limit(1, "lowering"):
        child.result()
    assert time.monotonic() - t0 < 10
    assert not child.done()  # still sleeping: the limit ended the wait, not the child
    child.cancel()
    assert not child._proc.is_alive() and child._proc.exitcode == -signal.SIGKILL
