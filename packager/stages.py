"""The stages of ``mpk package`` up to the artifacts: each takes typed values and returns one.

    load_model_stage   Recipe                 -> ModelHandle   (facts from the cache; the module when needed)
    data_stage         Recipe, ModelInfo      -> PackageData   (calibration loaded once, evaluation)
    reference_stage    ModelHandle, data      -> Reference     (fp32 PyTorch outputs)
    compress_stage     Recipe, ModelHandle    -> Compressed    (the model to export, report, QAT/mixed jobs)
    plan_jobs          Recipe, Compressed     -> [ArtifactJob] (one per backend x scheme, plus Compressed.jobs)

Each job then goes through :mod:`packager.build` (export, verify) and :mod:`packager.pipeline` writes the
manifest.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import ExportError, ModelError
from packager.cache import Cache, code_hash, make_key
from packager.export.base import Started
from packager.host import cpu_fingerprint
from packager.recipe import Recipe
from packager.types import (
    Dataset,
    ExportedArtifact,
    LoadedModel,
    ModelHandle,
    ModelInfo,
    hash_samples,
)

#: progress(event, text, seconds): event is "start" | "done" | "note" | "warn"; seconds only for "done"
Progress = Callable[[str, str, float | None], None]


# --- values --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageData:
    """The data of one run. ``calibration`` is None when no scheme and no compression step needs it;
    ``training`` is what distillation/QAT train on (the calibration set unless ``distill.samples`` asks
    for another count; both come from one load)."""

    evaluation: Dataset
    calibration: Dataset | None = None
    training: Dataset | None = None


@dataclass(frozen=True)
class Reference:
    """fp32 PyTorch outputs of the model the user handed in, one (N, *shape) array per output."""

    outputs: list[np.ndarray]
    sha256: str


@dataclass
class ArtifactJob:
    """One artifact to build and verify. ``export(folder)`` writes it into ``folder`` (exclusive to the call)."""

    backend: str
    scheme: str
    #: artifact cache key: everything that can change the artifact's bytes
    key: str
    export: Callable[[Path], ExportedArtifact]
    #: the model it is built from (IO an app binds to, classifier or not)
    model: ModelInfo
    #: the scheme whose tolerances apply ("int8" for a QAT artifact)
    tolerance_scheme: str
    #: ``export`` begun, possibly leaving part of the work running beside the next artifact
    #: (:meth:`packager.export.base.Exporter.start_export`); None: this job only exports in one go
    start: Callable[[Path, Callable[[], bool]], Started] | None = None

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.scheme}"


@dataclass
class Compressed:
    """What compression hands on: the model every backend x scheme artifact is built from (the input
    model when there is no ``compression:``), the manifest's ``compression`` report, and extra jobs (the
    QAT or mixed-precision int8 artifact)."""

    model: ModelHandle
    report: dict[str, Any] | None = None
    jobs: list[ArtifactJob] = field(default_factory=list)


# --- load --------------------------------------------------------------------------------------------------


def load_model_stage(recipe: Recipe, cache: Cache, *, facts_from_cache: bool = True) -> ModelHandle:
    """The model as a handle. For a built-in or a ``.pt2`` the facts come from the cache when they can
    (no torch import, no weights read); a factory is always loaded (its code can read anything)."""
    from packager.models import load_model, model_fingerprint

    shapes = list(recipe.input_shapes) or None

    def loader() -> LoadedModel:
        return load_model(
            recipe.model, input_shape=shapes, data=[recipe.evaluation, recipe.calibration], task=recipe.task
        )

    def info_key() -> str | None:
        fingerprint = model_fingerprint(recipe.model) if cache.enabled else None
        if fingerprint is None:
            return None
        return make_key(
            kind="model-info", fingerprint=fingerprint, spec=recipe.model, input_shapes=shapes, task=recipe.task
        )

    key = info_key()
    if key is not None and facts_from_cache:
        rec = cache.record("model-info", key)
        if rec is not None:
            try:
                return ModelHandle(ModelInfo.from_dict(rec), loader)
            except (KeyError, TypeError, ValueError):
                pass  # a damaged record: load the model
    model = loader()
    handle = ModelHandle.of(model)
    key = key or info_key()  # digits-cnn has weights to fingerprint only after its first training
    if key is not None:
        cache.put_record("model-info", key, handle.info.to_dict())
    return handle


# --- data --------------------------------------------------------------------------------------------------


def needs_calibration(backend: str, scheme: str) -> bool:
    from packager.export.capabilities import BACKENDS

    caps = BACKENDS.get(backend)
    return caps is None or scheme in caps.needs_calibration


def data_stage(
    recipe: Recipe, info: ModelInfo, combos: list[tuple[str, str]], cache: Cache, steps: Steps
) -> PackageData:
    """Calibration (loaded once, when an int8 scheme or a compression step needs it) and evaluation data."""
    from packager.data import load_dataset

    comp = recipe.compression
    train_count = comp.distill.samples if comp is not None and comp.distill is not None else None
    calibration = training = None
    if comp is not None or any(needs_calibration(b, s) for b, s in combos):
        count = max(recipe.calibration_count, train_count or 0)
        with steps("calibration data"):
            loaded = load_dataset(
                recipe.calibration,
                info,
                count=count,
                purpose="calibration",
                seed=recipe.seed,
                preprocess=recipe.preprocess,
                cache=cache,
            )
        calibration = loaded.head(recipe.calibration_count) if len(loaded) > recipe.calibration_count else loaded
        if train_count:
            training = loaded.head(train_count) if len(loaded) > train_count else loaded
        if calibration.synthetic:
            steps.warn("calibration data is SYNTHETIC random noise: int8 ranges will not match real inputs")
    with steps("evaluation data"):
        evaluation = load_dataset(
            recipe.evaluation,
            info,
            count=recipe.eval_count,
            purpose="evaluation",
            seed=recipe.seed + 1,
            preprocess=recipe.preprocess,
            cache=cache,
        )
    if evaluation.synthetic:
        steps.warn("evaluation data is SYNTHETIC random noise: metrics say nothing about real inputs")
    return PackageData(evaluation=evaluation, calibration=calibration, training=training)


# --- fp32 reference ----------------------------------------------------------------------------------------


def reference_stage(model: ModelHandle, evaluation: Dataset, cache: Cache) -> Reference:
    """fp32 PyTorch outputs on the evaluation set, cached by model and data hash (and this CPU: float
    kernels differ in the last bits between instruction sets)."""
    key = make_key(kind="reference", model=model.info.sha256, data=evaluation.sha256, cpu=cpu_fingerprint())
    hit = cache.arrays("references", key)
    if hit is not None and len(hit) == len(model.info.outputs):
        return Reference(hit, hash_samples([tuple(hit)]))
    loaded = model.load()
    outputs = _run_batched(loaded, evaluation.samples) or _run_per_sample(loaded, evaluation.samples)
    cache.put_arrays("references", key, outputs)
    return Reference(outputs, hash_samples([tuple(outputs)]))


def _as_list(res: Any) -> list[Any]:
    return list(res) if isinstance(res, (tuple, list)) else [res]


def _run_per_sample(model: LoadedModel, samples: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    import torch

    outs: list[list[np.ndarray]] = [[] for _ in model.outputs]
    with torch.no_grad():
        for sample in samples:
            res = _as_list(model.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in sample)))
            for i, r in enumerate(res):
                outs[i].append(r.detach().cpu().numpy())
    return [np.stack(o) for o in outs]


def _run_batched(model: LoadedModel, samples: list[tuple[np.ndarray, ...]], chunk: int = 16) -> list[np.ndarray] | None:
    """Samples concatenated along the batch dim: several times faster than one by one on a CPU.

    Only for batch-1 samples; a model that cannot take a bigger batch (a reshape to 1, ...) or
    returns something not split by batch falls back to per-sample runs (None).
    """
    import torch

    if not samples or any(a.shape[0] != 1 for a in samples[0]):
        return None
    outs: list[list[np.ndarray]] = [[] for _ in model.outputs]
    try:
        with torch.no_grad():
            for start in range(0, len(samples), chunk):
                part = samples[start : start + chunk]
                xs = [torch.from_numpy(np.concatenate([s[i] for s in part])) for i in range(len(part[0]))]
                res = _as_list(model.module(*xs))
                if len(res) != len(model.outputs) or any(r.shape[0] != len(part) for r in res):
                    return None
                for i, r in enumerate(res):
                    arr = r.detach().cpu().numpy()
                    outs[i].extend(arr[j : j + 1] for j in range(len(part)))
    except Exception:  # the eager model rejected a batch > 1; per-sample runs are the reference then
        return None
    return [np.stack(o) for o in outs]


# --- compress ----------------------------------------------------------------------------------------------


def compress_stage(
    recipe: Recipe, model: ModelHandle, data: PackageData, cache: Cache, steps: Steps, *, facts_from_cache: bool = True
) -> Compressed:
    """Apply the recipe's (already parsed) ``compression:`` to a copy of the model. The fp32 reference was
    taken from the original first, so every artifact is verified against the model the user handed in.

    What compression produced (the student's facts, the report, whether there is a QAT/mixed int8 model) is
    cached by everything it depends on; on a hit, training runs only if an artifact has to be rebuilt, and
    the student it gives must have the cached sha256 (else :class:`~packager.types.StaleModelInfo`).
    """
    cfg = recipe.compression
    if cfg is None:
        return Compressed(model)
    assert data.calibration is not None  # data_stage loads it whenever there is a compression section
    training = data.training or data.calibration
    key = make_key(
        kind="compression",
        model=model.info.sha256,
        config=cfg.to_dict(),
        calibration=data.calibration.sha256,
        training=training.sha256,
        labels=training.labels_sha256,
        seed=recipe.seed,
        code=code_hash("compress"),
    )
    run = _Compression(recipe, model, data, steps)
    rec = cache.record("compressions", key) if facts_from_cache else None
    try:
        info = ModelInfo.from_dict(rec["student"]) if rec is not None else None
    except (KeyError, TypeError, ValueError):
        info = None
    if rec is not None and info is not None:
        student = ModelHandle(info, run.student)
        report, scheme = rec.get("report"), rec.get("quantized_scheme")
    else:
        comp = run.result()
        student = ModelHandle.of(comp.model)
        report, scheme = comp.report, comp.quantized_scheme if comp.quantized is not None else None
        cache.put_record(
            "compressions", key, {"student": student.info.to_dict(), "report": report, "quantized_scheme": scheme}
        )
    jobs = []
    if scheme is not None:
        jobs.append(
            ArtifactJob(
                backend="executorch",
                scheme=scheme,
                key=make_key(
                    kind="artifact",
                    model=student.info.sha256,  # the student's weights and the whole compression config
                    teacher=model.info.sha256,
                    backend="executorch",
                    scheme=scheme,
                    calibration=data.calibration.sha256,
                    training=training.sha256,
                    labels=training.labels_sha256,
                    seed=recipe.seed,
                ),
                export=lambda folder: run.export_quantized(student, folder),
                model=student.info,
                tolerance_scheme="int8",
            )
        )
    return Compressed(student, _jsonable_report(report), jobs)


class _Compression:
    """``apply_compression`` run at most once, when something needs its result."""

    def __init__(self, recipe: Recipe, model: ModelHandle, data: PackageData, steps: Steps) -> None:
        self.recipe, self.model, self.data, self.steps = recipe, model, data, steps
        self._result: Any = None

    def result(self) -> Any:
        if self._result is None:
            from packager.compress.recipe_io import apply_compression

            with self.steps("compress"):
                self._result = apply_compression(
                    self.model.load(),
                    self.recipe.compression,
                    self.data.calibration,
                    training=self.data.training,
                    progress=False,
                )
        return self._result

    def student(self) -> LoadedModel:
        return self.result().model

    def export_quantized(self, student: ModelHandle, folder: Path) -> ExportedArtifact:
        from packager.compress.recipe_io import export_quantized

        student.load()  # runs compression if it came from the cache, and checks the student's sha256
        return _exported(export_quantized(self.result(), folder))


def _jsonable_report(report: Any) -> dict[str, Any] | None:
    """The report as JSON has it: the same value whether it was just made or read back from the cache."""
    import json

    return None if report is None else json.loads(json.dumps(report, default=str))


def _exported(art: ExportedArtifact | None) -> ExportedArtifact:
    if art is None:  # pragma: no cover - export_quantized returns None only when nothing was quantized
        raise ModelError("compression produced no quantized model to export")
    return art


# --- plan --------------------------------------------------------------------------------------------------


def exporter_for(name: str, overrides: Mapping[str, Any] | None, recipe: Recipe) -> Any:
    """The exporter instance for a backend: the caller's override (tests, plugins) or the registry's."""
    if overrides and name in overrides:
        exporter = overrides[name]
    else:
        from packager.export import EXPORTERS

        target = EXPORTERS.get(name)
        exporter = target() if isinstance(target, type) else target
    if hasattr(exporter, "bias_correction"):
        exporter.bias_correction = recipe.bias_correction
    if hasattr(exporter, "reduce_range"):
        exporter.reduce_range = recipe.onnx_reduce_range
    if hasattr(exporter, "float_fallback"):
        exporter.float_fallback = recipe.float_fallback
        exporter.tolerance_overrides = recipe.tolerances
    return exporter


class SharedCapture:
    """One ``torch.export`` capture of a model, shared by every exporter that needs the model.

    Each export gets its own deep copy of the program (about 0.4 s for EfficientNet-Lite0, against 3-6 s
    for a capture): an exporter may change the program's tensors in place, and those are the user's
    module's own parameters (ExecuTorch's int8 bias correction did, and shifted the biases of every
    artifact exported after it). If the capture fails, each exporter captures for itself and reports its
    own failure, as it would alone.
    """

    def __init__(self, model: ModelHandle) -> None:
        self.model = model
        self._program: Any = None
        self._failed = False

    def model_for_export(self) -> LoadedModel:
        from packager.export.base import capture

        loaded = self.model.load()
        if self._failed:
            return loaded
        if self._program is None:
            try:
                self._program = capture(loaded, "torch.export")
            except ExportError:
                self._failed = True
                return loaded
        return dataclasses.replace(loaded, exported_program=copy.deepcopy(self._program))


def plan_jobs(
    recipe: Recipe,
    combos: list[tuple[str, str]],
    compressed: Compressed,
    data: PackageData,
    exporters: Mapping[str, Any] | None,
) -> list[ArtifactJob]:
    """One job per (backend, scheme), in recipe order, then compression's QAT/mixed-precision job."""
    info = compressed.model.info
    shared = SharedCapture(compressed.model)  # captures only when the first artifact misses the cache
    jobs: list[ArtifactJob] = []
    for backend, scheme in combos:
        calibration = data.calibration if needs_calibration(backend, scheme) else None
        key = make_key(
            kind="artifact",
            model=info.sha256,
            backend=backend,
            scheme=scheme,
            calibration=calibration.sha256 if calibration is not None else None,
            inputs=[s.to_dict() for s in info.inputs],
            seed=recipe.seed,
            bias_correction=recipe.bias_correction if calibration is not None else None,
            reduce_range=recipe.onnx_reduce_range if backend == "onnx" and scheme.startswith("int8") else None,
            # the tolerances shape the artifact only through the fallback search; with it off they are the
            # verification's business (its own cache key), so a stricter recipe reuses the artifact
            float_fallback=(
                recipe.float_fallback,
                recipe.tolerances.get(scheme) if recipe.float_fallback == "auto" else None,
                info.task,
            )
            if scheme.startswith("int8") and backend in ("executorch", "onnx")
            else None,
        )
        call = _ExportCall(backend, scheme, calibration, recipe, exporters, shared)
        jobs.append(
            ArtifactJob(
                backend=backend,
                scheme=scheme,
                key=key,
                export=call,
                model=info,
                tolerance_scheme=scheme,
                start=call.start,
            )
        )
    return jobs + compressed.jobs


class _ExportCall:
    """``job.export``: the backend's exporter on the shared capture of the model (see :class:`SharedCapture`)."""

    def __init__(
        self,
        backend: str,
        scheme: str,
        calibration: Dataset | None,
        recipe: Recipe,
        exporters: Mapping[str, Any] | None,
        shared: SharedCapture,
    ) -> None:
        self.backend, self.scheme, self.calibration = backend, scheme, calibration
        self.recipe, self.exporters, self.shared = recipe, exporters, shared

    def __call__(self, folder: Path) -> ExportedArtifact:
        return self.start(folder, overlap=lambda: False).finish()

    def start(self, folder: Path, overlap: Callable[[], bool]) -> Started:
        exporter = exporter_for(self.backend, self.exporters, self.recipe)
        model = self.shared.model_for_export()
        return exporter.start_export(model, self.scheme, self.calibration, folder, overlap=overlap)


# --- helpers -----------------------------------------------------------------------------------------------


class Steps:
    """Named, timed steps reported to a progress callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress: Progress = progress or (lambda *a: None)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import time

        self.progress("start", name, None)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        self.progress("done", name, dt)

    def note(self, text: str) -> None:
        self.progress("note", text, None)

    def warn(self, text: str) -> None:
        self.progress("warn", text, None)
