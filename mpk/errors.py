"""One exception tree for everything mpk can refuse or fail at.

Every error a user can cause is an :class:`MpkError`; the CLI prints its
message on one line and exits with its documented code. Nothing here imports
torch, so the CLI can raise these before any heavy import.

Exit codes (documented in README.md, fixed; scripts depend on them):

====  =====================================================================
0     success (gate: every check passed)
1     a check failed: verification tolerance missed, budget failed, regression
2     usage error: bad flag, bad config key or value, missing or bad input file
3     inconclusive: a gate check's confidence interval straddles its budget
4     infrastructure error: device unreachable, runner crashed, disk full,
      output not writable, a runtime that is not installed
5     model error: the model cannot be loaded, captured or lowered
130   interrupted (Ctrl-C); partial results that were written stay valid
====  =====================================================================
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_INFRA = 4
EXIT_MODEL = 5

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_CHECK_FAILED: "a check failed (verification, budget or regression)",
    EXIT_USAGE: "usage error (bad flag, config or input file)",
    EXIT_INCONCLUSIVE: "inconclusive (confidence interval straddles a budget)",
    EXIT_INFRA: "infrastructure error (device, runner, disk, missing runtime)",
    EXIT_MODEL: "model error (cannot load, capture or lower the model)",
}


class MpkError(click.ClickException):
    """Base of every error mpk raises on purpose. ``exit_code`` is fixed per class."""

    exit_code = EXIT_INFRA

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def format_message(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def show(self, file=None) -> None:
        click.echo(click.style("error: ", fg="red", bold=True) + self.format_message(), err=True)

    def __reduce__(self) -> tuple[object, ...]:
        # pickled as class + attributes, not constructor arguments (they differ per subclass), so an error
        # raised in a forked child (packager.host.Forked) arrives as itself; an OSError cause comes along
        # (the pipeline stops on a full disk rather than blaming one backend)
        cause = self.__cause__ if isinstance(self.__cause__, OSError) else None
        return (_rebuild, (type(self), dict(self.__dict__), cause))


def _rebuild(cls: type[MpkError], state: dict[str, object], cause: OSError | None = None) -> MpkError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message"))
    error.__dict__.update(state)
    error.__cause__ = cause
    return error


class UsageError(MpkError):
    """The user asked for something malformed: flag, name, path, file content."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file (recipe, devices.yaml, budgets) failed validation.

    ``problems`` holds every error found, each prefixed with its path, so the
    user fixes them all in one go::

        devices.yaml: devices[2].budgets.p90_ms: expected a number, got 'fast'
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {p}" for p in self.problems]
        head = f"{len(self.problems)} problem(s) in {source}:" if len(lines) > 1 else ""
        super().__init__("\n".join([head, *("  " + ln for ln in lines)]) if head else lines[0])


class UnknownNameError(UsageError):
    """A name that is not in a registry; the message suggests the nearest."""


class DataError(UsageError):
    """Calibration/evaluation data is missing, empty or corrupt."""


class ModelError(MpkError):
    """The model cannot be loaded, traced/exported, or lowered."""

    exit_code = EXIT_MODEL


class ExportError(ModelError):
    """One backend could not produce its artifact. ``backend`` names it."""

    def __init__(self, backend: str, message: str, *, hint: str | None = None) -> None:
        self.backend = backend
        super().__init__(f"{backend}: {message}", hint=hint)


class CheckFailed(MpkError):
    """A check ran and its answer was 'no' (verification, budget, regression)."""

    exit_code = EXIT_CHECK_FAILED


class Inconclusive(MpkError):
    exit_code = EXIT_INCONCLUSIVE


class InfraError(MpkError):
    """Something around the model failed: disk, runtime, process, network."""

    exit_code = EXIT_INFRA


class OutputNotWritable(InfraError):
    pass


class RuntimeMissing(InfraError):
    """A runtime needed for this step is not installed or not on this OS."""


class DeviceError(InfraError):
    """A device-side failure. ``device`` is the device id, ``reason`` a short tag."""

    def __init__(self, device: str, message: str, *, reason: str = "error", hint: str | None = None) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device}: {message}", hint=hint)


class DeviceNotFound(DeviceError):
    def __init__(self, device: str, message: str = "not found", **kw) -> None:
        super().__init__(device, message, reason="not-found", **kw)


class DeviceTimeout(DeviceError):
    def __init__(self, device: str, message: str = "timed out", **kw) -> None:
        super().__init__(device, message, reason="timeout", **kw)


class DeviceUnauthorized(DeviceError):
    def __init__(self, device: str, message: str = "unauthorized", **kw) -> None:
        kw.setdefault("hint", "accept the 'Allow USB debugging?' prompt on the device, then retry")
        super().__init__(device, message, reason="unauthorized", **kw)


class InstallFailed(DeviceError):
    def __init__(self, device: str, message: str, **kw) -> None:
        super().__init__(device, message, reason="install-failed", **kw)


class RunnerError(InfraError):
    """A runner (host process, app, native binary) failed to produce a result."""


class SchemaError(InfraError):
    """A result/manifest failed its JSON Schema. The message names the bad field's path."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept: ``Interrupted("out/ was left as it was; ...")``. Exit 130."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message
