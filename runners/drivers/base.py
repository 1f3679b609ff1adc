"""The driver contract: one runner spec in (a directory holding spec + files), one runner result out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.devices import DeviceSpec


@dataclass(frozen=True)
class Probe:
    """Whether a device can be used right now, and a one-line reason either way."""

    reachable: bool
    detail: str


class Driver(abc.ABC):
    #: registry name, as written in devices.yaml's ``runner``
    name: str
    #: backends this runner can execute; others become cell errors before anything is pushed
    backends: tuple[str, ...] = ("executorch", "onnx", "coreml")

    def supported_backends(self) -> tuple[str, ...]:
        """Backends this runner can execute on this machine (the host runner runs CoreML on macOS only)."""
        return self.backends

    @abc.abstractmethod
    def probe(self, device: DeviceSpec) -> Probe:
        """Cheap reachability check (no model is run)."""

    @abc.abstractmethod
    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        """Run ``spec`` (paths relative to ``spec_dir``) and return a schema-valid runner result.

        Per-artifact failures are inside the result. Raises a DeviceError or
        RunnerError when no result could be had at all (device gone, app crashed).
        """

    def cancel(self) -> None:
        """Stop the cell this driver instance is running, on the device too (Ctrl-C in ``mpk bench``); called
        from another thread. Default: nothing to stop."""
        return None

    def temperatures(self, device: DeviceSpec) -> dict[str, float]:
        """Current temperatures (degrees C) for cool-down decisions; empty when unknown."""
        return {}
