"""``package(recipe)``: model -> data -> fp32 reference -> export x verify per backend/scheme -> manifest.

Output safety, in order:

1. Before any work: OUT must be creatable, and if it exists it must be empty or
   an earlier mpk package; anything else is refused (UsageError) unless
   ``force``. A path that cannot be written is OutputNotWritable (exit 4).
2. Everything is written into a staging dir beside OUT
   (``.OUT.staging-XXXX``); each artifact is exported into its own temp dir
   and renamed into place.
3. Only when the manifest is written is OUT swapped in: the previous OUT is
   renamed to ``OUT.prev`` (one generation kept; an older mpk package there is
   replaced), then the staging dir renamed to OUT. A crash, Ctrl-C or a full
   disk before that leaves OUT exactly as it was and removes the staging dir.

One backend failing to export is recorded in ``failures[]`` and the rest still
run; :meth:`PackageResult.check` then raises (exit 5 for export failures, exit
1 for a missed tolerance) after everything was written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mpk import __version__
from mpk.errors import CheckFailed, InfraError, ModelError, MpkError, OutputNotWritable, UsageError
from packager import cache as cache_mod
from packager import manifest as mf
from packager.recipe import Recipe
from packager.runtime_requirements import requirements as runtime_requirements
from packager.types import Dataset, ExportedArtifact, LoadedModel

#: progress(event, text, seconds): event is "start" | "done" | "note" | "warn"; seconds only for "done"
Progress = Callable[[str, str, float | None], None]

_DISK_FULL = cache_mod.DISK_FULL


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


class _Steps:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or (lambda *a: None)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.progress("start", name, None)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        self.progress("done", name, dt)


def _prepare_output(out: Path, force: bool) -> Path:
    """Refuse unsafe targets before any work; return a fresh staging dir beside ``out``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as e:
            raise OutputNotWritable(f"cannot read output directory {out}: {e.strerror or e}") from None
        if entries and not (out / "manifest.json").is_file() and not force:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise UsageError(
                f"{out} holds files that are not an mpk package ({shown}); refusing to replace them",
                hint=f"choose another --out, or pass --force (they are then kept in {out.name}.prev)",
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        _umask_mode(staging)
        return staging
    except OSError as e:
        raise OutputNotWritable(
            f"output directory {out} is not writable: {e.strerror or e}", hint="choose another --out"
        ) from None


def _umask_mode(path: Path) -> None:
    """mkdtemp makes 0700 dirs; the package must get the permissions a plain mkdir would (readable by a CI user)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


def _swap_into_place(staging: Path, out: Path) -> Path | None:
    """Move the old OUT aside (kept as OUT.prev), then rename staging -> OUT. Returns where the old one went."""
    previous = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            previous = out.with_name(out.name + ".prev")
            n = 1
            # one generation of mpk packages is kept; anything else already there is never deleted
            while previous.exists() and not (previous / "manifest.json").is_file():
                n += 1
                previous = out.with_name(f"{out.name}.prev{n}")
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(out, previous)
    os.replace(staging, out)
    return previous


def _reference_outputs(model: LoadedModel, data: Dataset, use_cache: bool) -> list[np.ndarray]:
    """fp32 PyTorch outputs per output, shape (N, *output_shape). Cached by model and data hash."""
    key = cache_mod.make_key(kind="reference", model=model.sha256, data=cache_mod.hash_arrays(data.samples))
    if use_cache:
        hit = cache_mod.cached_arrays("references", key)
        if hit is not None and len(hit) == len(model.outputs):
            return [hit[f"o{i}"] for i in range(len(hit))]

    stacked = _run_batched(model, data.samples) or _run_per_sample(model, data.samples)
    if use_cache:
        cache_mod.store_arrays("references", key, {f"o{i}": a for i, a in enumerate(stacked)})
    return stacked


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


def _exporter(name: str, overrides: Mapping[str, Any] | None) -> Any:
    if overrides and name in overrides:
        return overrides[name]
    from packager.export import EXPORTERS

    target = EXPORTERS.get(name)
    return target() if isinstance(target, type) else target


def _needs_calibration(backend: str, scheme: str) -> bool:
    from packager.export.capabilities import BACKENDS

    caps = BACKENDS.get(backend)
    return caps is None or scheme in caps.needs_calibration


def _dataset_entry(d: Dataset | None, *, evaluation: bool) -> dict[str, Any]:
    if d is None:
        return {"source": "none (no scheme needs calibration)", "count": 0, "synthetic": False}
    e: dict[str, Any] = {
        "source": d.source,
        "count": len(d),
        "synthetic": d.synthetic,
        "sha256": cache_mod.hash_arrays(d.samples),
    }
    if d.synthetic:
        e["warning"] = "SYNTHETIC random data: quantization ranges and metrics do not reflect real inputs"
    if evaluation:
        e["labelled"] = d.labels is not None
    return e


def _rel(paths: list[Path], base: Path) -> list[Path]:
    return [p.relative_to(base) for p in paths]


def _export_one(
    exporter: Any,
    model: LoadedModel,
    backend: str,
    scheme: str,
    calibration: Dataset | None,
    staging: Path,
    artifact_cache: cache_mod.ArtifactCache,
    key: str,
) -> tuple[ExportedArtifact, bool, dict[str, Any]]:
    """Export (or copy from cache) into staging/<id>/, atomically. Returns (artifact, cached, cache extra)."""
    art_id = f"{backend}-{scheme}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{art_id}-", dir=staging))
    _umask_mode(tmp)
    try:
        hit = artifact_cache.get(key, tmp)
        cached = hit is not None
        if hit is not None:
            art, extra = hit
        else:
            art = exporter.export(model, scheme, calibration, tmp)
            extra = {}
            if not Path(art.path).exists():
                raise ModelError(f"{backend} exporter reported {art.path} but wrote no such file")
            art = dataclasses.replace(art, path=Path(art.path), extra_files=[Path(p) for p in art.extra_files])
            extra["compressed_size_bytes"] = mf.compressed_size(art.path)
            artifact_cache.put(key, art, tmp, extra)
        rel_main, *rel_extra = _rel([art.path, *art.extra_files], tmp)
        rel_profiling = dict(zip(art.profiling_files, _rel(list(art.profiling_files.values()), tmp), strict=True))
        final = staging / art_id
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    art = dataclasses.replace(art, path=final / rel_main, extra_files=[final / p for p in rel_extra],
                              profiling_files={k: final / p for k, p in rel_profiling.items()})  # fmt: skip
    return art, cached, extra


def _artifact_entry(art: ExportedArtifact, base: Path, extra: dict[str, Any]) -> dict[str, Any]:
    delegation = None
    if art.delegation is not None:
        delegation = {k: art.delegation.get(k) for k in ("delegate", "delegated_ops", "total_ops", "fraction")}
        delegation.update({k: v for k, v in art.delegation.items() if k not in delegation})
    return {
        "id": f"{art.backend}-{art.scheme}",
        "backend": art.backend,
        "scheme": art.scheme,
        "path": art.path.relative_to(base).as_posix(),
        "sha256": mf.sha256_path(art.path),
        "size_bytes": mf.size_path(art.path),
        "compressed_size_bytes": int(extra.get("compressed_size_bytes") or mf.compressed_size(art.path)),
        "extra_files": [
            {"path": p.relative_to(base).as_posix(), "sha256": mf.sha256_path(p), "size_bytes": mf.size_path(p)}
            for p in art.extra_files
        ],
        "inputs": [s.to_dict() for s in art.inputs],
        "outputs": [s.to_dict() for s in art.outputs],
        "delegation": delegation,
        "op_summary": dict(art.op_summary),
        "details": _jsonable(art.details),
        **_profiling_entry(art, base),
        "runtime": runtime_requirements(art.backend, art.path),  # what a device must run (runners/compat.py)
    }


def _profiling_entry(art: ExportedArtifact, base: Path) -> dict[str, Any]:
    """``{"profiling": {kind: file entry}}`` for the files that map a profile to the source (none: nothing)."""
    files = {k: {"path": p.relative_to(base).as_posix(), "sha256": mf.sha256_path(p), "size_bytes": mf.size_path(p)}
             for k, p in art.profiling_files.items() if p.exists()}  # fmt: skip
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


def _add_trained_int8(
    comp: Any,
    staging: Path,
    evaluation: Dataset,
    reference: list[np.ndarray],
    recipe: Recipe,
    exporters: Mapping[str, Any] | None,
    steps: Any,
    entries: list[dict[str, Any]],
    failures: list[dict[str, str]],
) -> None:
    """The recipe's qat / mixed_precision result: an ExecuTorch artifact that is already int8 (no second PTQ),
    verified like every other against the original fp32 model."""
    from packager.compress.recipe_io import export_quantized
    from packager.verify import tolerances_for, verify_artifact

    scheme = comp.quantized_scheme or "int8"
    art_id = f"executorch-{scheme}"
    try:
        with steps(f"export {art_id}"):
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{art_id}-", dir=staging))
            art = export_quantized(comp, tmp)
            final = staging / art_id
            os.replace(tmp, final)
            art = dataclasses.replace(art, path=final / Path(art.path).relative_to(tmp))
    except MpkError as e:
        failures.append({"backend": "executorch", "scheme": scheme, "error": e.format_message()})
        steps.progress("warn", f"{art_id} failed: {e.format_message()}", None)
        return
    entry = _artifact_entry(art, staging, {})
    entry["cached"] = False
    with steps(f"verify {art_id}"):
        entry["verification"] = verify_artifact(
            _exporter("executorch", exporters),
            art,
            evaluation,
            reference,
            classifier=comp.model.task == "classification",
            tolerances=tolerances_for("int8", recipe.tolerances),
            threads=recipe.threads,
            expected_io=(comp.model.inputs, comp.model.outputs),
        )
    entries.append(entry)


def _compression_config(recipe: Recipe) -> Any:
    """The recipe's compression section as a config, or None when there is nothing to apply."""
    if not recipe.compression:
        return None
    from packager.compress.recipe_io import parse_compression

    cfg = parse_compression(recipe.compression, "recipe")
    return None if cfg.empty else cfg


def package(
    recipe: Recipe,
    *,
    progress: Progress | None = None,
    exporters: Mapping[str, Any] | None = None,
) -> PackageResult:
    """Package ``recipe.model`` into ``recipe.out``. See the module docstring for the output guarantees.

    ``exporters`` maps a backend name to an Exporter instance, overriding the registry (tests, plugins).
    Call :meth:`PackageResult.check` to turn export failures and missed tolerances into exit codes.
    """
    from packager.data import load_dataset
    from packager.models import load_model
    from packager.verify import tolerances_for, verify_artifact

    combos = recipe.combinations()  # raises on impossible pairs before anything is touched
    out = Path(recipe.out)
    staging = _prepare_output(out, recipe.force)
    steps = _Steps(progress)
    note = steps.progress
    done = False
    try:
        with steps("load model"):
            model = load_model(recipe.model, input_shape=list(recipe.input_shapes) or None)
        calibration = None
        if any(_needs_calibration(b, s) for b, s in combos):
            with steps("calibration data"):
                calibration = load_dataset(
                    recipe.calibration,
                    model,
                    count=recipe.calibration_count,
                    purpose="calibration",
                    seed=recipe.seed,
                    preprocess=recipe.preprocess,
                )
            if calibration.synthetic:
                note("warn", "calibration data is SYNTHETIC random noise: int8 ranges will not match real inputs", None)
        with steps("evaluation data"):
            evaluation = load_dataset(
                recipe.evaluation,
                model,
                count=recipe.eval_count,
                purpose="evaluation",
                seed=recipe.seed + 1,
                preprocess=recipe.preprocess,
            )
        if evaluation.synthetic:
            note("warn", "evaluation data is SYNTHETIC random noise: metrics say nothing about real inputs", None)
        with steps("fp32 reference"):
            reference = _reference_outputs(model, evaluation, recipe.cache)
        # Compression runs after the reference is taken from the original model, so every artifact of the
        # compressed model is verified against the fp32 model the user handed in: what pruning costs shows.
        compression_report = None
        comp = None
        ccfg = _compression_config(recipe)
        if ccfg is not None:
            if calibration is None:
                with steps("calibration data"):
                    calibration = load_dataset(
                        recipe.calibration, model, count=recipe.calibration_count, purpose="calibration",
                        seed=recipe.seed, preprocess=recipe.preprocess,
                    )  # fmt: skip
            training = None
            if ccfg.distill is not None and ccfg.distill.samples:
                training = load_dataset(
                    recipe.calibration, model, count=ccfg.distill.samples, purpose="calibration",
                    seed=recipe.seed, preprocess=recipe.preprocess,
                )  # fmt: skip
            from packager.compress.recipe_io import apply_compression

            with steps("compress"):
                comp = apply_compression(model, ccfg, calibration, training=training, progress=False)
            model, compression_report = comp.model, comp.report
        calib_hash = cache_mod.hash_arrays(calibration.samples) if calibration is not None else None
        artifact_cache = cache_mod.ArtifactCache(enabled=recipe.cache)
        entries: list[dict[str, Any]] = []
        failures: list[dict[str, str]] = []
        cached: dict[str, bool] = {}
        classifier = model.task == "classification"
        for backend, scheme in combos:
            art_id = f"{backend}-{scheme}"
            needs_cal = _needs_calibration(backend, scheme)
            key = cache_mod.make_key(
                kind="artifact",
                model=model.sha256,
                backend=backend,
                scheme=scheme,
                calibration=calib_hash if needs_cal else None,
                inputs=[s.to_dict() for s in model.inputs],
                seed=recipe.seed,
                bias_correction=recipe.bias_correction if needs_cal else None,
            )
            try:
                with steps(f"export {art_id}"):
                    exporter = _exporter(backend, exporters)
                    if hasattr(exporter, "bias_correction"):
                        exporter.bias_correction = recipe.bias_correction
                    art, was_cached, extra = _export_one(
                        exporter,
                        model,
                        backend,
                        scheme,
                        calibration if needs_cal else None,
                        staging,
                        artifact_cache,
                        key,
                    )
            except OSError:
                raise
            except MpkError as e:
                cause = e.__cause__
                if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
                    raise cause from None  # a full disk is not this backend's fault: stop, keep OUT intact
                msg = e.format_message().replace("\n  hint: ", " (hint: ", 1)
                msg = msg + ")" if e.hint else msg
                failures.append({"backend": backend, "scheme": scheme, "error": msg})
                note("warn", f"{art_id} failed: {msg}", None)
                continue
            except Exception as e:  # an exporter bug must not take the other backends down with it
                failures.append({"backend": backend, "scheme": scheme, "error": f"{type(e).__name__}: {e}"})
                note("warn", f"{art_id} failed: {type(e).__name__}: {e}", None)
                continue
            cached[art_id] = was_cached
            if was_cached:
                note("note", f"{art_id}: cached", None)
            entry = _artifact_entry(art, staging, extra)
            entry["cached"] = was_cached
            with steps(f"verify {art_id}"):
                entry["verification"] = verify_artifact(
                    exporter,
                    art,
                    evaluation,
                    reference,
                    classifier=classifier,
                    tolerances=tolerances_for(scheme, recipe.tolerances),
                    threads=recipe.threads,
                    expected_io=(model.inputs, model.outputs),
                )
            entries.append(entry)
        if comp is not None and comp.quantized is not None:
            _add_trained_int8(comp, staging, evaluation, reference, recipe, exporters, steps, entries, failures)
        with steps("manifest"):
            n_ref = mf.write_reference(
                staging / "reference.npz",
                [s.name for s in model.inputs],
                [s.name for s in model.outputs],
                evaluation.samples,
                reference,
                evaluation.labels,
                recipe.reference_samples,
            )
            manifest = {
                "schema_version": mf.SCHEMA_VERSION,
                "mpk_version": __version__,
                "created_utc": mf.utc_now(),
                "model": {
                    "name": model.name,
                    "source": dict(model.source),
                    "sha256": model.sha256,
                    "task": model.task,
                    "num_classes": model.num_classes,
                    "parameters": int(sum(p.numel() for p in model.module.parameters())),
                    "preprocess": _jsonable(recipe.preprocess or model.preprocess),
                },
                "inputs": [s.to_dict() for s in model.inputs],
                "outputs": [s.to_dict() for s in model.outputs],
                "recipe": _jsonable(recipe.to_dict()),
                "data": {
                    "calibration": _dataset_entry(calibration, evaluation=False),
                    "evaluation": _dataset_entry(evaluation, evaluation=True),
                },
                "reference": {
                    "path": "reference.npz",
                    "sha256": mf.sha256_path(staging / "reference.npz"),
                    "samples": n_ref,
                },
                "artifacts": entries,
                "failures": failures,
                "environment": mf.environment(),
                "compression": _jsonable(compression_report),
            }
            mf.write_manifest(staging / "manifest.json", manifest)
        previous = _swap_into_place(staging, out)
        done = True
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise InfraError(
                f"disk full while writing the package ({e.strerror}); nothing in {out} was changed",
                hint=f"free space on the disk holding {out.parent} (and $MPK_CACHE_DIR), then re-run",
            ) from None
        raise InfraError(f"cannot write the package: {e}; nothing in {out} was changed") from None
    finally:
        if not done:
            shutil.rmtree(staging, ignore_errors=True)
    return PackageResult(
        out=out,
        manifest_path=out / "manifest.json",
        manifest=manifest,
        cached=cached,
        previous=previous,
        timings=steps.timings,
    )
