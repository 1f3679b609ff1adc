"""Typed values passed between the packager's stages. No torch import at module load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

DType = Literal["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output. ``shape`` entries are ints, or a str naming a dynamic dim.

    >>> TensorSpec("image", (1, 3, 224, 224), "float32").to_dict()["shape"]
    [1, 3, 224, 224]
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: DType = "float32"
    #: for dynamic dims: name -> (min, max); example value is the int in ``example_shape``
    dynamic: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic:
            d["dynamic"] = {k: list(v) for k, v in self.dynamic.items()}
        return d


@dataclass
class LoadedModel:
    """A model ready to export: an eval-mode ``nn.Module`` plus what mpk knows of it."""

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: where it came from: {"kind": "builtin"|"file"|"module"|"pt2", "spec": str}
    source: dict[str, str]
    #: sha256 of the weights (state_dict bytes) and, for files, the source file
    sha256: str
    task: Literal["classification", "other"] = "other"
    num_classes: int | None = None
    #: the ``torch.export.ExportedProgram`` when the model came from a .pt2 file
    exported_program: Any = None
    #: preprocessing for image models, used by the built-in datasets
    preprocess: dict[str, Any] | None = None


@dataclass
class Dataset:
    """Calibration or evaluation data: a list of samples, each a tuple of arrays (batch dim included)."""

    samples: list[tuple[np.ndarray, ...]]
    source: str
    #: True when the data is random noise (only with an explicit flag); manifests say so loudly
    synthetic: bool = False
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class ExportedArtifact:
    """What an exporter hands back. Paths are absolute; the manifest makes them relative."""

    backend: str
    scheme: str
    path: Path
    extra_files: list[Path] = field(default_factory=list)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    #: ExecuTorch only: {"delegate": "XnnpackBackend", "delegated_ops": n, "total_ops": m, "fraction": f,
    #:  "undelegated": {"aten.op": count}}
    delegation: dict[str, Any] | None = None
    #: op histogram of the artifact's graph, e.g. {"Conv": 40, "QuantizeLinear": 80}
    op_summary: dict[str, int] = field(default_factory=dict)
    #: backend-specific notes (quantizer config, opset, min deployment target...)
    details: dict[str, Any] = field(default_factory=dict)
    #: files that map a profile back to the PyTorch source, by kind: "op_map" (mpk.opmap/1), "etrecord"
    #: (packager/export/source_map.py); in the package beside the artifact, never loaded by a runtime
    profiling_files: dict[str, Path] = field(default_factory=dict)
