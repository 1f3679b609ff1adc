"""Build and verify one artifact: the per-artifact stages of ``mpk package``.

``start_build`` begins an :class:`~packager.stages.ArtifactJob` (a cache hit, sha256 checked, or an export that
may leave its lowering running in a forked child) and ``PendingBuild.finish`` puts it into the package;
``verify_stage`` gives the manifest's ``verification`` for it, from the cache when everything it depends on is
the same. Every artifact, QAT and mixed precision included, goes through both.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpk.errors import ModelError
from packager.cache import Cache, CacheHit, code_hash, make_key
from packager.export.base import Started
from packager.host import Background, cpu_fingerprint, native_stderr_quiet
from packager.output import umask_mode
from packager.recipe import Recipe
from packager.stages import ArtifactJob, PackageData, Reference, exporter_for
from packager.types import ExportedArtifact


@dataclass
class BuiltArtifact:
    """An artifact in its final folder of the package, with its checked hashes and sizes."""

    job: ArtifactJob
    artifact: ExportedArtifact
    cached: bool
    #: sha256 and size of the main file (or folder), of each extra file and of each profiling file, by absolute path
    sha256: dict[Path, str]
    size_bytes: dict[Path, int]
    #: zstd -19 size of the main path; computed in the background on a miss
    compressed_size: Future[int]


def start_build(
    job: ArtifactJob,
    staging: Path,
    cache: Cache,
    background: Background,
    *,
    overlap: Callable[[], bool] | None = None,
) -> PendingBuild:
    """Begin building ``job`` into ``staging/<id>/`` (atomically, at :meth:`PendingBuild.finish`): a cache hit is
    copied now, sha256 checked; a miss is exported, and when ``overlap()`` allows it (asked right before) the
    exporter may leave part of the export running (``job.start``) until ``finish``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{job.id}-", dir=staging))
    umask_mode(tmp)
    try:
        hit = cache.artifacts.get(job.key, tmp)
        if hit is not None:
            started = Started.now(hit.artifact)
        elif overlap is not None and job.start is not None:
            started = job.start(tmp, overlap)
        else:
            started = Started.now(job.export(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PendingBuild(job, staging, tmp, started, hit, cache, background)


class PendingBuild:
    """An artifact whose export has begun (:func:`start_build`); :meth:`finish` completes it into the package."""

    def __init__(
        self,
        job: ArtifactJob,
        staging: Path,
        tmp: Path,
        started: Started,
        hit: CacheHit | None,
        cache: Cache,
        background: Background,
    ) -> None:
        self.job, self._staging, self._tmp, self._started, self._hit = job, staging, tmp, started, hit
        self._cache, self._background = cache, background

    @property
    def running(self) -> bool:
        """True while part of the export may still run (in a forked child)."""
        return self._started.running

    def done(self) -> bool:
        return self._started.done()

    def cancel(self) -> None:
        """Stop what still runs and drop the half-built folder."""
        self._started.cancel()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def finish(self) -> BuiltArtifact:
        """Wait for the export, check what it wrote, cache it and move it to ``staging/<id>/``."""
        from packager.manifest import sha256_path, size_path

        job, tmp, hit = self.job, self._tmp, self._hit
        try:
            art = self._started.finish()
            if hit is not None:
                files = [Path(art.path), *map(Path, art.extra_files), *map(Path, art.profiling_files.values())]
                sha = {p: hit.sha256[p.relative_to(tmp).as_posix()] for p in files}
            else:
                if not Path(art.path).exists():
                    raise ModelError(f"{job.backend} exporter reported {art.path} but wrote no such file")
                art = dataclasses.replace(
                    art,
                    backend=job.backend,
                    scheme=job.scheme,
                    path=Path(art.path),
                    extra_files=[Path(p) for p in art.extra_files],
                    profiling_files={k: Path(p) for k, p in art.profiling_files.items()},
                )
                sha = {p: sha256_path(p) for p in [art.path, *art.extra_files, *art.profiling_files.values()]}
                self._cache.artifacts.put(job.key, art, tmp, {p.relative_to(tmp).as_posix(): h for p, h in sha.items()})
            final = self._staging / job.id
            os.replace(tmp, final)
        except BaseException:
            self.cancel()
            raise
        moved = {final / p.relative_to(tmp): h for p, h in sha.items()}
        art = dataclasses.replace(
            art,
            path=final / art.path.relative_to(tmp),
            extra_files=[final / p.relative_to(tmp) for p in art.extra_files],
            profiling_files={k: final / p.relative_to(tmp) for k, p in art.profiling_files.items()},
        )
        sizes = {p: size_path(p) for p in moved}
        return BuiltArtifact(
            job=job,
            artifact=art,
            cached=hit is not None,
            sha256=moved,
            size_bytes=sizes,
            compressed_size=_compressed_size(art.path, moved[art.path], self._cache, self._background),
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


def _metrics_code() -> str:
    """sha256 of mpk/metrics.py: a changed definition (what counts as a clear top-1) re-verifies."""
    import mpk.metrics
    from mpk.files import sha256_file

    return sha256_file(Path(mpk.metrics.__file__))


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
    sha256 checked when it was built), the evaluation samples and labels, the fp32 reference, tolerances,
    threads, this host's OS and CPU, the runtime versions and mpk's code. A run that crashed is not cached.
    """
    from packager.verify import tolerances_for, verify_artifact

    job, art = built.job, built.artifact
    tolerances = tolerances_for(job.tolerance_scheme, recipe.tolerances)
    task = job.model.task
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
        task=task,
        expected_io=[[s.to_dict() for s in job.model.inputs], [s.to_dict() for s in job.model.outputs]],
        threads=recipe.threads or os.cpu_count(),
        platform=sys.platform,
        cpu=cpu_fingerprint(),
        verify_code=code_hash("verify.py", "runtime.py"),
        metrics_code=_metrics_code(),
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
            task=task,
            tolerances=tolerances,
            threads=recipe.threads,
            expected_io=(job.model.inputs, job.model.outputs),
        )
    if result.get("metrics") or result.get("status") == "skipped":
        cache.put_record("verifications", key, result)
    return result, False
