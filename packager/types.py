"""Typed values passed between the packager's stages. No torch import at module load.

The stages of :func:`packager.pipeline.package` and what flows between them::

    load      Recipe            -> ModelHandle   (ModelInfo now; the nn.Module only if something needs it)
    data      ModelInfo         -> PackageData   (calibration loaded once, evaluation, training)
    reference ModelHandle, data -> Reference     (fp32 PyTorch outputs on the evaluation set)
    compress  ModelHandle, data -> Compressed    (the model every artifact is built from, plus QAT/mixed jobs)
    per job   ArtifactJob       -> BuiltArtifact -> verification dict  (export, then verify; both cached)
    manifest  everything above  -> manifest.json
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

DType = Literal["float32", "float16", "int8", "uint8", "int32", "int64", "bool"]
#: what the first output decides (mpk.metrics.TASKS), or "other" (embeddings, features: no top-1)
Task = Literal["classification", "language-model", "segmentation", "other"]


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        """Inverse of :meth:`to_dict` (cache entries, manifests)."""
        dynamic = {k: (int(v[0]), int(v[1])) for k, v in d.get("dynamic", {}).items()}
        return cls(d["name"], tuple(d["shape"]), d["dtype"], dynamic)


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline knows of a model without holding its weights: enough to load data, build cache keys
    and write the manifest. A cached re-run of a built-in model gets this from the cache and never imports torch.

    ``sha256`` is :func:`packager.models.loaders.state_dict_sha256` of the loaded module (weights and
    architecture); ``parameters`` counts its elements (EfficientNet-Lite0: 4,652,008).
    """

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: dict[str, str]
    sha256: str
    task: Task = "other"
    num_classes: int | None = None
    parameters: int = 0
    preprocess: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "source": dict(self.source),
            "sha256": self.sha256,
            "task": self.task,
            "num_classes": self.num_classes,
            "parameters": self.parameters,
            "preprocess": self.preprocess,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelInfo:
        return cls(
            name=d["name"],
            inputs=[TensorSpec.from_dict(s) for s in d["inputs"]],
            outputs=[TensorSpec.from_dict(s) for s in d["outputs"]],
            source=dict(d["source"]),
            sha256=d["sha256"],
            task=d["task"],
            num_classes=d["num_classes"],
            parameters=int(d["parameters"]),
            preprocess=d["preprocess"],
        )


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
    task: Task = "other"
    num_classes: int | None = None
    #: a ``torch.export.ExportedProgram`` of ``module``, which exporters use instead of capturing again: the
    #: program a .pt2 file held, or the pipeline's one capture (each exporter gets its own copy of it)
    exported_program: Any = None
    #: preprocessing for image models, used by the built-in datasets
    preprocess: dict[str, Any] | None = None

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            source=dict(self.source),
            sha256=self.sha256,
            task=self.task,
            num_classes=self.num_classes,
            parameters=int(sum(p.numel() for p in self.module.parameters())),
            preprocess=self.preprocess,
        )


class ModelHandle:
    """A model that may never need loading: ``info`` is always there; :meth:`load` loads it at first call.

    The pipeline holds one of these so that a run whose artifacts, references and verifications all come
    from the cache does not pay for torch and the weights. ``load`` checks that what it loaded is the model
    ``info`` describes (same sha256) and raises :class:`StaleModelInfo` if not.
    """

    def __init__(self, info: ModelInfo, loader: Callable[[], LoadedModel] | None = None) -> None:
        self.info = info
        self._loader = loader
        self._loaded: LoadedModel | None = None

    @classmethod
    def of(cls, model: LoadedModel) -> ModelHandle:
        handle = cls(model.info())
        handle._loaded = model
        return handle

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> LoadedModel:
        if self._loaded is None:
            if self._loader is None:  # pragma: no cover - a handle is built with a loader or a model
                raise RuntimeError(f"model {self.info.name} has no loader")
            model = self._loader()
            if model.sha256 != self.info.sha256:
                raise StaleModelInfo(self.info.sha256, model.sha256)
            self._loaded = model
        return self._loaded


class StaleModelInfo(Exception):
    """A cached :class:`ModelInfo` named other weights than the model that loaded (the pipeline retries
    without the model-info cache)."""

    def __init__(self, cached: str, loaded: str) -> None:
        super().__init__(f"cached model info {cached[:12]} but the model loaded as {loaded[:12]}")


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

    @functools.cached_property
    def sha256(self) -> str:
        """sha256 over the samples (dtype, shape, bytes), labels left out; computed once per Dataset."""
        return hash_samples(self.samples)

    @functools.cached_property
    def labels_sha256(self) -> str | None:
        if self.labels is None:
            return None
        lab = np.ascontiguousarray(self.labels)
        return hashlib.sha256(f"{lab.dtype}|{lab.shape}|".encode() + lab.tobytes()).hexdigest()

    def head(self, n: int, source: str | None = None) -> Dataset:
        """The first ``n`` samples (and labels) as a new Dataset."""
        labels = None if self.labels is None else self.labels[:n]
        return Dataset(self.samples[:n], source or self.source, synthetic=self.synthetic, labels=labels)


def hash_samples(samples: list[tuple[np.ndarray, ...]]) -> str:
    """sha256 over sample arrays (dtype, shape, bytes); identical data -> identical key."""
    h = hashlib.sha256()
    for sample in samples:
        for a in sample:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


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
