"""The exporter contract: one module per backend behind this small base class.

An exporter turns a :class:`~packager.types.LoadedModel` into one artifact for
one quantization scheme, and can open that artifact on the host runtime so the
packager can verify it against fp32. Capabilities are plain data in
:mod:`packager.export.capabilities` (no heavy imports) so impossible
combinations are refused before any work starts.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Protocol

import numpy as np

from packager.types import Dataset, ExportedArtifact, LoadedModel


class HostSession(Protocol):
    """An artifact opened on this host's runtime. ``run`` takes one sample, returns the outputs."""

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]: ...


class Exporter(abc.ABC):
    #: registry name: "executorch", "onnx", "coreml"
    name: str
    #: file suffix of the main artifact: ".pte", ".onnx", ".mlpackage"
    suffix: str

    @abc.abstractmethod
    def export(self, model: LoadedModel, scheme: str, calibration: Dataset | None, out_dir: Path) -> ExportedArtifact:
        """Write the artifact for ``scheme`` under ``out_dir`` (exclusive to this call).

        Raises :class:`~mpk.errors.ExportError` naming the failing operator
        when the backend cannot lower the model.
        """

    @abc.abstractmethod
    def open(self, path: Path, *, threads: int | None = None) -> HostSession:
        """Open an artifact on the host runtime. Raises RuntimeMissing where the host cannot run it
        (CoreML off macOS)."""

    def can_run_on_host(self) -> bool:
        return True
