"""The stages of ``mpk package``: each takes typed values and returns one (see :mod:`packager.types`).

    load_model_stage   Recipe                 -> ModelHandle   (facts from the cache; the module when needed)
    data_stage         Recipe, ModelInfo      -> PackageData   (calibration loaded once, evaluation)
    reference_stage    ModelHandle, data      -> Reference     (fp32 PyTorch outputs)
    compress_stage     Recipe, ModelHandle    -> Compressed    (the model to export, report, QAT/mixed jobs)
    plan_jobs          Recipe, Compressed     -> [ArtifactJob] (one per backend x scheme, plus Compressed.jobs)
    build_stage        ArtifactJob            -> BuiltArtifact (export, or a sha256-checked cache copy)
    verify_stage       BuiltArtifact          -> dict          (the manifest's ``verification``; cached)

Every artifact, QAT and mixed precision included, goes through ``build_stage`` and ``verify_stage``, so
all of them share one cache and one verification. The manifest is assembled by :mod:`packager.pipeline`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import ExportError, ModelError
from packager.cache import Cache, code_hash, make_key
from packager.output import umask_mode
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


@dataclass
class BuiltArtifact:
    """An artifact in its final folder of the package, with its checked hashes and sizes."""

    job: ArtifactJob
    artifact: ExportedArtifact
    cached: bool
    #: sha256 and size of the main file (or folder) and of each extra file, by absolute path
    sha256: dict[Path, str]
    size_bytes: dict[Path, int]
    #: zstd -19 size of the main path; computed in the background on a miss
    compressed_size: Future[int]


# --- load --------------------------------------------------------------------------------------------------


def load_model_stage(recipe: Recipe, cache: Cache, *, facts_from_cache: bool = True) -> ModelHandle:
    """The model as a handle. For a built-in or a ``.pt2`` the facts come from the cache when they can
    (no torch import, no weights read); a factory is always loaded (its code can read anything)."""
    from packager.models import load_model, model_fingerprint

    shapes = list(recipe.input_shapes) or None

    def loader() -> LoadedModel:
        return load_model(recipe.model, input_shape=shapes)

    def info_key() -> str | None:
        fingerprint = model_fingerprint(recipe.model) if cache.enabled else None
        if fingerprint is None:
            return None
        return make_key(kind="model-info", fingerprint=fingerprint, spec=recipe.model, input_shapes=shapes)

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
        )
        jobs.append(
            ArtifactJob(
                backend=backend,
                scheme=scheme,
                key=key,
                export=_ExportCall(backend, scheme, calibration, recipe, exporters, shared),
                model=info,
                tolerance_scheme=scheme,
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
        exporter = exporter_for(self.backend, self.exporters, self.recipe)
        return exporter.export(self.shared.model_for_export(), self.scheme, self.calibration, folder)


# --- build -------------------------------------------------------------------------------------------------


def build_stage(job: ArtifactJob, staging: Path, cache: Cache, background: Background) -> BuiltArtifact:
    """Export ``job`` (or copy it from the cache, sha256 checked) into ``staging/<id>/``, atomically."""
    from packager.manifest import sha256_path, size_path

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job.id}-", dir=staging))
    umask_mode(tmp)
    try:
        hit = cache.artifacts.get(job.key, tmp)
        if hit is not None:
            art = hit.artifact
            sha = {Path(art.path): hit.sha256[Path(art.path).relative_to(tmp).as_posix()]}
            sha |= {Path(p): hit.sha256[Path(p).relative_to(tmp).as_posix()] for p in art.extra_files}
        else:
            art = job.export(tmp)
            if not Path(art.path).exists():
                raise ModelError(f"{job.backend} exporter reported {art.path} but wrote no such file")
            art = dataclasses.replace(
                art,
                backend=job.backend,
                scheme=job.scheme,
                path=Path(art.path),
                extra_files=[Path(p) for p in art.extra_files],
            )
            sha = {p: sha256_path(p) for p in [art.path, *art.extra_files]}
            cache.artifacts.put(job.key, art, tmp, {p.relative_to(tmp).as_posix(): h for p, h in sha.items()})
        final = staging / job.id
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    moved = {final / p.relative_to(tmp): h for p, h in sha.items()}
    art = dataclasses.replace(
        art, path=final / art.path.relative_to(tmp), extra_files=[final / p.relative_to(tmp) for p in art.extra_files]
    )
    sizes = {p: size_path(p) for p in moved}
    return BuiltArtifact(
        job=job,
        artifact=art,
        cached=hit is not None,
        sha256=moved,
        size_bytes=sizes,
        compressed_size=_compressed_size(art.path, moved[art.path], cache, background),
    )


def _compressed_size(path: Path, sha256: str, cache: Cache, background: Background) -> Future[int]:
    """zstd -19 size of ``path``, from the cache (keyed by the bytes' sha256) or computed in the background
    while the next artifact exports (zstd releases the GIL; -19 on an 18 MB model takes seconds)."""
    rec = cache.record("zstd-size", sha256)
    if rec is not None and isinstance(rec.get("bytes"), int):
        done: Future[int] = Future()
        done.set_result(rec["bytes"])
        return done

    def compute() -> int:
        from packager.manifest import compressed_size

        n = compressed_size(path)
        cache.put_record("zstd-size", sha256, {"bytes": n})
        return n

    return background.submit(compute)


# --- verify ------------------------------------------------------------------------------------------------


def verify_stage(
    built: BuiltArtifact,
    data: PackageData,
    reference: Reference,
    recipe: Recipe,
    cache: Cache,
    exporters: Mapping[str, Any] | None,
    *,
    quiet_native: bool = False,
) -> tuple[dict[str, Any], bool]:
    """The manifest's ``verification`` for one artifact, and whether it came from the cache.

    The cache key holds everything :func:`packager.verify.verify_artifact` reads: the artifact's bytes (by the
    sha256 checked in ``build_stage``), the evaluation samples and labels, the fp32 reference, tolerances,
    threads, this host's OS and CPU, the runtime versions and mpk's code. A run that crashed is not cached.
    """
    from packager.verify import tolerances_for, verify_artifact

    job, art = built.job, built.artifact
    tolerances = tolerances_for(job.tolerance_scheme, recipe.tolerances)
    classifier = job.model.task == "classification"
    ev = data.evaluation
    key = make_key(
        kind="verification",
        backend=job.backend,
        scheme=job.scheme,
        artifact=sorted((p.relative_to(art.path.parent).as_posix(), h) for p, h in built.sha256.items()),
        evaluation=ev.sha256,
        labels=ev.labels_sha256,
        reference=reference.sha256,
        tolerances=tolerances,
        classifier=classifier,
        expected_io=[[s.to_dict() for s in job.model.inputs], [s.to_dict() for s in job.model.outputs]],
        threads=recipe.threads or os.cpu_count(),
        platform=sys.platform,
        cpu=cpu_fingerprint(),
        verify_code=code_hash("verify.py", "runtime.py"),
    )
    hit = cache.record("verifications", key)
    if hit is not None:
        return hit, True
    with native_stderr_quiet(quiet_native):
        result = verify_artifact(
            exporter_for(job.backend, exporters, recipe),
            art,
            ev,
            reference.outputs,
            classifier=classifier,
            tolerances=tolerances,
            threads=recipe.threads,
            expected_io=(job.model.inputs, job.model.outputs),
        )
    if result.get("metrics") or result.get("status") == "skipped":
        cache.put_record("verifications", key, result)
    return result, False


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
