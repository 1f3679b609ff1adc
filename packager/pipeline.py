"""``package(recipe)``: load -> data -> reference -> compress -> per artifact {build -> verify} -> manifest.

Each stage is a function that takes and returns typed values (:mod:`packager.stages` up to the artifact
jobs, :mod:`packager.build` for each artifact); this module runs them in order and writes the manifest.
Output safety (staging dir, ``OUT.prev``, nothing lost on a failure) is :mod:`packager.output`'s.

One artifact failing to export is recorded in ``failures[]`` and the rest still run;
:meth:`PackageResult.check` then raises (exit 5 for export failures, exit 1 for a missed tolerance) after
everything was written.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mpk import __version__
from mpk.errors import CheckFailed, ModelError, MpkError
from packager.build import BuiltArtifact, PendingBuild, start_build, verify_stage
from packager.cache import DISK_FULL, Cache
from packager.host import Background, StepTimeout, time_limit
from packager.output import Staging, staged
from packager.recipe import Recipe
from packager.runtime_requirements import requirements as runtime_requirements
from packager.stages import (
    ArtifactJob,
    Compressed,
    PackageData,
    Progress,
    Reference,
    Steps,
    compress_stage,
    data_stage,
    load_model_stage,
    plan_jobs,
    reference_stage,
)
from packager.types import Dataset, ModelInfo, StaleModelInfo

__all__ = ["PackageResult", "Progress", "package"]

_T = TypeVar("_T")


@dataclass
class PackageResult:
    out: Path
    manifest_path: Path
    manifest: dict[str, Any]
    #: artifact id -> True when it came from the cache
    cached: dict[str, bool] = field(default_factory=dict)
    #: where the previous contents of ``out`` were moved, if there were any
    previous: Path | None = None
    #: step name -> seconds
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failures(self) -> list[dict[str, str]]:
        return self.manifest["failures"]

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [a for a in self.manifest["artifacts"] if a["verification"]["status"] == "failed"]

    def check(self) -> None:
        """Raise if anything asked for is missing or out of tolerance (called after all was written)."""
        if self.failures:
            lines = [f"{f['backend']}/{f['scheme']}: {f['error']}" for f in self.failures]
            raise ModelError(
                f"{len(self.failures)} artifact(s) could not be exported (the others are in {self.out}): "
                + " | ".join(lines)
            )
        if self.failed_checks:
            lines = [f"{a['id']}: {a['verification']['reason']}" for a in self.failed_checks]
            raise CheckFailed("verification failed: " + " | ".join(lines) + f" (manifest: {self.manifest_path})")


def package(
    recipe: Recipe,
    *,
    progress: Progress | None = None,
    exporters: Mapping[str, Any] | None = None,
    quiet_native: bool = False,
) -> PackageResult:
    """Package ``recipe.model`` into ``recipe.out``. See :mod:`packager.output` for the output guarantees.

    ``exporters`` maps a backend name to an Exporter instance, overriding the registry (tests, plugins).
    ``quiet_native`` keeps what native runtimes print to fd 2 off the terminal (the CLI without --verbose).
    Call :meth:`PackageResult.check` to turn export failures and missed tolerances into exit codes.
    """
    combos = recipe.combinations()  # raises on impossible pairs before anything is touched
    try:
        return _package(recipe, combos, progress, exporters, quiet_native, model_facts_from_cache=True)
    except StaleModelInfo as e:  # the cached facts named other weights: start again from the loaded model
        Steps(progress).note(f"{e}; loading the model")
        return _package(recipe, combos, progress, exporters, quiet_native, model_facts_from_cache=False)


def _package(
    recipe: Recipe,
    combos: list[tuple[str, str]],
    progress: Progress | None,
    exporters: Mapping[str, Any] | None,
    quiet_native: bool,
    *,
    model_facts_from_cache: bool,
) -> PackageResult:
    from packager.manifest import sha256_path

    cache = Cache(enabled=recipe.cache, sha256=sha256_path)
    steps = Steps(progress)
    background = Background()
    try:
        with staged(Path(recipe.out), recipe.force) as staging:
            with steps("load model"):
                model = load_model_stage(recipe, cache, facts_from_cache=model_facts_from_cache)
            data = data_stage(recipe, model.info, combos, cache, steps)
            with steps("fp32 reference"):
                reference = reference_stage(model, data.evaluation, cache)
            compressed = compress_stage(recipe, model, data, cache, steps, facts_from_cache=model_facts_from_cache)
            failures: list[dict[str, str]] = []
            built = _build_all(
                plan_jobs(recipe, combos, compressed, data, exporters),
                staging,
                cache,
                background,
                steps,
                failures,
                lambda b: _verify(b, data, reference, recipe, cache, exporters, steps, quiet_native),
                recipe.step_timeout,
            )
            with steps("manifest"):
                manifest = _write_manifest(staging, recipe, compressed, data, reference, built, failures)
            staging.commit()
    finally:
        background.close()
    return PackageResult(
        out=staging.out,
        manifest_path=staging.out / "manifest.json",
        manifest=manifest,
        cached={b.job.id: b.cached for b, _ in built},
        previous=staging.previous,
        timings=steps.timings,
    )


def _build_all(
    jobs: list[ArtifactJob],
    staging: Staging,
    cache: Cache,
    background: Background,
    steps: Steps,
    failures: list[dict[str, str]],
    verify: Callable[[BuiltArtifact], dict[str, Any]],
    step_timeout: float | None,
) -> list[tuple[BuiltArtifact, dict[str, Any]]]:
    """Build and verify every job; the built ones in job order, each with its verification.

    An exporter may leave part of its export running in a forked child (ExecuTorch's lowering, about half
    of a cold EfficientNet-Lite0 package) while the next jobs build and verify here. It may fork only when
    another job is left to overlap it and no earlier child still runs (asked right before it forks, so a
    child that ended during this export's quantization frees the slot); each is finished (and verified) as
    soon as it is done, or after the last job.
    """
    built: dict[int, tuple[BuiltArtifact, dict[str, Any]]] = {}
    waiting: list[tuple[int, PendingBuild, float]] = []  # exports left running: job index, build, deadline

    def complete(i: int, pending: PendingBuild, deadline: float) -> None:
        waiting[:] = [w for w in waiting if w[1] is not pending]
        artifact = _recorded(
            pending.job, failures, steps, functools.partial(_finish, pending, deadline, steps, step_timeout)
        )
        if artifact is not None:
            built[i] = (artifact, verify(artifact))

    try:
        for i, job in enumerate(jobs):
            for w in [w for w in waiting if w[1].done()]:
                complete(*w)
            more = i + 1 < len(jobs)

            def may_fork(more: bool = more) -> bool:
                return more and all(w[1].done() for w in waiting)

            deadline = time.monotonic() + step_timeout if step_timeout else math.inf
            start = functools.partial(_start, job, staging, cache, background, steps, may_fork, step_timeout)
            pending = _recorded(job, failures, steps, start)
            if pending is None:
                continue
            if pending.running:
                waiting.append((i, pending, deadline))
            else:
                complete(i, pending, deadline)
        while waiting:
            complete(*waiting[0])
    finally:
        for _, pending, _ in waiting:  # Ctrl-C, a full disk: nothing may keep running behind the user's back
            pending.cancel()
    order = {(j.backend, j.scheme): i for i, j in reversed(list(enumerate(jobs)))}
    failures.sort(key=lambda f: order.get((f["backend"], f["scheme"]), len(jobs)))  # job order, as built is
    return [built[i] for i in sorted(built)]


def _start(
    job: ArtifactJob,
    staging: Staging,
    cache: Cache,
    background: Background,
    steps: Steps,
    overlap: Callable[[], bool],
    step_timeout: float | None,
) -> PendingBuild:
    with steps(f"export {job.id}"), time_limit(step_timeout, f"exporting {job.id}"):
        pending = start_build(job, staging.dir, cache, background, overlap=overlap)
    if pending.running:
        steps.note(f"{job.id}: lowering in a child process while the next artifact builds")
    return pending


def _finish(pending: PendingBuild, deadline: float, steps: Steps, step_timeout: float | None) -> BuiltArtifact:
    job = pending.job
    if not pending.running or pending.done():  # what ran beside the other jobs has its result: no wait to bound
        built = pending.finish()
    else:
        with steps(f"finish export {job.id}"):
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StepTimeout("no time left")
                with time_limit(left if math.isfinite(left) else None, f"exporting {job.id}"):
                    built = pending.finish()
            except StepTimeout:
                pending.cancel()
                raise StepTimeout(f"exporting {job.id} did not finish within {step_timeout:g} s") from None
    if built.cached:
        steps.note(f"{job.id}: cached")
    return built


def _recorded(job: ArtifactJob, failures: list[dict[str, str]], steps: Steps, fn: Callable[[], _T]) -> _T | None:
    """``fn()``; an export failure (or one past the step limit) is recorded in ``failures`` and the run goes
    on with the other artifacts (None)."""
    try:
        return fn()
    except StepTimeout as e:
        msg = f"{job.backend}: {e} (the step limit, --step-timeout); the other artifacts were still produced"
        failures.append({"backend": job.backend, "scheme": job.scheme, "error": msg})
        steps.warn(f"{job.id} failed: {msg}")
        return None
    except OSError:
        raise
    except MpkError as e:
        cause = e.__cause__
        if isinstance(cause, OSError) and cause.errno in DISK_FULL:
            raise cause from None  # a full disk is not this backend's fault: stop, keep OUT intact
        msg = e.format_message().replace("\n  hint: ", " (hint: ", 1) + (")" if e.hint else "")
        failures.append({"backend": job.backend, "scheme": job.scheme, "error": msg})
        steps.warn(f"{job.id} failed: {msg}")
        return None
    except Exception as e:  # an exporter bug must not take the other backends down with it
        failures.append({"backend": job.backend, "scheme": job.scheme, "error": f"{type(e).__name__}: {e}"})
        steps.warn(f"{job.id} failed: {type(e).__name__}: {e}")
        return None


def _verify(
    artifact: BuiltArtifact,
    data: PackageData,
    reference: Reference,
    recipe: Recipe,
    cache: Cache,
    exporters: Mapping[str, Any] | None,
    steps: Steps,
    quiet_native: bool,
) -> dict[str, Any]:
    job = artifact.job
    with steps(f"verify {job.id}"):
        try:
            with time_limit(recipe.step_timeout, f"verifying {job.id}"):
                verification, _ = verify_stage(
                    artifact, data, reference, recipe, cache, exporters, quiet_native=quiet_native
                )
        except StepTimeout as e:
            verification = _timed_out_verification(str(e), recipe, job)
            steps.warn(f"{job.id}: {e}")
    return verification


def _timed_out_verification(reason: str, recipe: Recipe, job: ArtifactJob) -> dict[str, Any]:
    from packager.verify import tolerances_for

    return {
        "status": "failed",
        "passed": False,
        "reason": f"{reason} (the step limit, --step-timeout)",
        "metrics": {},
        "tolerances": tolerances_for(job.tolerance_scheme, recipe.tolerances),
        "samples": 0,
    }


# --- manifest ----------------------------------------------------------------------------------------------


def _write_manifest(
    staging: Staging,
    recipe: Recipe,
    compressed: Compressed,
    data: PackageData,
    reference: Reference,
    built: list[tuple[BuiltArtifact, dict[str, Any]]],
    failures: list[dict[str, str]],
) -> dict[str, Any]:
    from packager import manifest as mf

    base = staging.dir
    info: ModelInfo = compressed.model.info
    ev = data.evaluation
    n_ref = mf.write_reference(
        base / "reference.npz",
        [s.name for s in info.inputs],
        [s.name for s in info.outputs],
        ev.samples,
        reference.outputs,
        ev.labels,
        recipe.reference_samples,
    )
    manifest = {
        "schema_version": mf.SCHEMA_VERSION,
        "mpk_version": __version__,
        "created_utc": mf.utc_now(),
        "model": {
            "name": info.name,
            "source": dict(info.source),
            "sha256": info.sha256,
            "task": info.task,
            "num_classes": info.num_classes,
            "parameters": info.parameters,
            "preprocess": _jsonable(recipe.preprocess or info.preprocess),
        },
        "inputs": [s.to_dict() for s in info.inputs],
        "outputs": [s.to_dict() for s in info.outputs],
        "recipe": _jsonable(recipe.to_dict()),
        "data": {
            "calibration": _dataset_entry(data.calibration, evaluation=False),
            "evaluation": _dataset_entry(ev, evaluation=True),
        },
        "reference": {"path": "reference.npz", "sha256": mf.sha256_path(base / "reference.npz"), "samples": n_ref},
        "artifacts": [_artifact_entry(b, v, base) for b, v in built],
        "failures": failures,
        "environment": mf.environment(),
        "compression": _jsonable(compressed.report),
    }
    mf.write_manifest(base / "manifest.json", manifest)
    return manifest


def _artifact_entry(b: BuiltArtifact, verification: dict[str, Any], base: Path) -> dict[str, Any]:
    art = b.artifact
    delegation = None
    if art.delegation is not None:
        delegation = {k: art.delegation.get(k) for k in ("delegate", "delegated_ops", "total_ops", "fraction")}
        delegation.update({k: v for k, v in art.delegation.items() if k not in delegation})
    return {
        "id": b.job.id,
        "backend": b.job.backend,
        "scheme": b.job.scheme,
        "path": art.path.relative_to(base).as_posix(),
        "sha256": b.sha256[art.path],
        "size_bytes": b.size_bytes[art.path],
        "compressed_size_bytes": int(b.compressed_size.result()),
        "extra_files": [
            {"path": p.relative_to(base).as_posix(), "sha256": b.sha256[p], "size_bytes": b.size_bytes[p]}
            for p in art.extra_files
        ],
        "inputs": [s.to_dict() for s in art.inputs],
        "outputs": [s.to_dict() for s in art.outputs],
        "delegation": delegation,
        "op_summary": dict(art.op_summary),
        "details": _jsonable(art.details),
        **_profiling_entry(b, base),
        "runtime": runtime_requirements(art.backend, art.path),  # what a device must run (runners/compat.py)
        "cached": b.cached,
        "verification": verification,
    }


def _dataset_entry(d: Dataset | None, *, evaluation: bool) -> dict[str, Any]:
    if d is None:
        return {"source": "none (no scheme needs calibration)", "count": 0, "synthetic": False}
    e: dict[str, Any] = {"source": d.source, "count": len(d), "synthetic": d.synthetic, "sha256": d.sha256}
    if d.synthetic:
        e["warning"] = "SYNTHETIC random data: quantization ranges and metrics do not reflect real inputs"
    if evaluation:
        e["labelled"] = d.labels is not None
    return e


def _profiling_entry(b: BuiltArtifact, base: Path) -> dict[str, Any]:
    """``{"profiling": {kind: file entry}}`` for the files that map a profile to the source (none: nothing)."""
    files = {
        k: {"path": p.relative_to(base).as_posix(), "sha256": b.sha256[p], "size_bytes": b.size_bytes[p]}
        for k, p in b.artifact.profiling_files.items()
        if p in b.sha256
    }
    return {"profiling": files} if files else {}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
