"""Calibration and evaluation data: ``load_dataset(spec, model, count=, purpose=)`` -> Dataset.

Spec forms::

    builtin            the model's own data (EfficientNet-Lite0: skimage's photos, augmented;
                       digits-cnn: the train split for calibration, the labelled test split for evaluation)
    path/to/dir/       images (sub-folders named 0, 1, ... are class labels)
    path/to/file.npz   arrays keyed by input name, leading axis N (optional ``labels``)
    path/to/file.py:fn fn(count) -> array | {name: array} | (that, labels)
    random             Gaussian noise; only when asked, and the manifest marks it synthetic
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mpk.errors import DataError, ModelError, UsageError
from mpk.files import installed_version, sha256_file
from packager.data.images import IMAGE_SUFFIXES, load_image_dir
from packager.models.loaders import example_shape
from packager.types import Dataset, LoadedModel, ModelInfo, TensorSpec

if TYPE_CHECKING:  # pragma: no cover
    from packager.cache import Cache

Purpose = Literal["calibration", "evaluation"]
#: data needs only the model's inputs, preprocessing and source, so the facts of an unloaded model will do
ModelLike = ModelInfo | LoadedModel


def _check_sample(spec: TensorSpec, arr: np.ndarray, where: str) -> np.ndarray:
    want = example_shape(spec)
    fixed = [i for i, d in enumerate(spec.shape) if isinstance(d, int)]
    if arr.ndim != len(want) or any(arr.shape[i] != want[i] for i in fixed):
        raise DataError(f"{where}: input {spec.name!r} sample has shape {tuple(arr.shape)}, the model takes {want}")
    return np.ascontiguousarray(arr, dtype=np.dtype(spec.dtype))


def _split_arrays(
    arrays: dict[str, np.ndarray], model: ModelLike, where: str, count: int | None
) -> list[tuple[np.ndarray, ...]]:
    """{input name: (N, ...)} -> N samples. Accepts (N, *sample_shape) or (N, *shape_without_batch)."""
    names = [s.name for s in model.inputs]
    if len(names) == 1 and names[0] not in arrays and len(arrays) == 1:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(f"{where}: no array for input(s) {', '.join(missing)}; found keys {', '.join(arrays) or '-'}")
    ns = {n: len(arrays[n]) for n in names}
    if len(set(ns.values())) != 1:
        raise DataError(f"{where}: inputs have different sample counts {ns}")
    n = next(iter(ns.values()))
    if n == 0:
        raise DataError(f"{where}: zero samples")
    n = min(n, count) if count else n
    samples = []
    for i in range(n):
        sample = []
        for spec in model.inputs:
            a = np.asarray(arrays[spec.name])
            # (N, 1, C, H, W): each sample carries its batch dim; (N, C, H, W): add it back
            one = a[i] if a.ndim == len(spec.shape) + 1 else a[i : i + 1]
            sample.append(_check_sample(spec, one, where))
        samples.append(tuple(sample))
    return samples


def _labels(raw: Any, n: int, where: str) -> np.ndarray | None:
    if raw is None:
        return None
    lab = np.asarray(raw).reshape(-1).astype(np.int64)
    if len(lab) < n:
        raise DataError(f"{where}: {len(lab)} labels for {n} samples")
    return lab[:n]


def _from_npz(path: Path, model: ModelLike, count: int | None) -> Dataset:
    import zipfile

    if path.is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz archive (numpy.savez writes a zip of .npy arrays; this is not a zip)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from e
    labels = arrays.pop("labels", None)
    arrays = {k.removeprefix("input:"): v for k, v in arrays.items() if not k.startswith("output:")}
    samples = _split_arrays(arrays, model, str(path), count)
    return Dataset(samples, str(path), labels=_labels(labels, len(samples), str(path)))


def _from_callable(spec: str, model: ModelLike, count: int | None) -> Dataset:
    file, _, attr = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"data file not found: {path}")
    name = f"mpk_user_data_{abs(hash(str(path.resolve())))}"
    mspec = importlib.util.spec_from_file_location(name, path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[name] = mod
    try:
        mspec.loader.exec_module(mod)
        fn = getattr(mod, attr, None)
        if not callable(fn):
            raise UsageError(f"{spec}: {path} has no function {attr!r}")
        takes_count = len(inspect.signature(fn).parameters) >= 1
        ret = fn(count) if takes_count else fn()
    except UsageError:
        raise
    except Exception as e:
        raise DataError(f"{spec}: raised {type(e).__name__}: {e}") from e
    labels = None
    if isinstance(ret, tuple) and len(ret) == 2:
        ret, labels = ret
    arrays = ret if isinstance(ret, dict) else {model.inputs[0].name: np.asarray(ret)}
    samples = _split_arrays({k: np.asarray(v) for k, v in arrays.items()}, model, spec, count)
    return Dataset(samples, spec, labels=_labels(labels, len(samples), spec))


def _random(model: ModelLike, count: int | None, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    n = count or 16
    samples = [
        tuple(rng.standard_normal(example_shape(s)).astype(np.dtype(s.dtype)) for s in model.inputs) for _ in range(n)
    ]
    return Dataset(samples, "random", synthetic=True)


def load_dataset(
    spec: str | None,
    model: ModelLike,
    *,
    count: int | None,
    purpose: Purpose,
    seed: int = 0,
    preprocess: dict[str, Any] | None = None,
    cache: Cache | None = None,
) -> Dataset:
    """Load ``spec`` as ``count`` samples shaped for ``model``. ``preprocess`` overrides the model's own.

    With a ``cache``, decoded images (built-in photos, an image directory) and the built-in digits split are
    kept there, keyed by the source files' sha256, the preprocessing, the input shape and the loading code:
    a re-run reads arrays instead of decoding and resizing every photo.
    """
    spec = spec or "builtin"
    pp = preprocess or model.preprocess
    if spec == "builtin":
        from packager.data.builtin import builtin_dataset, builtin_sources

        return _memo(
            cache,
            lambda: {
                "sources": builtin_sources(model, purpose),
                "model": model.source,
                "inputs": [s.to_dict() for s in model.inputs],
            },
            {"count": count, "purpose": purpose, "preprocess": pp},
            lambda: builtin_dataset(model, count=count, purpose=purpose, preprocess=pp),
        )
    if spec == "random":
        return _random(model, count, seed)
    path = Path(spec)
    if path.is_dir():
        if len(model.inputs) != 1:
            raise DataError(f"{spec}: an image directory feeds one input; the model has {len(model.inputs)}")
        shape = example_shape(model.inputs[0])

        def from_dir() -> Dataset:
            samples, labels = load_image_dir(path, shape, pp, count)
            return Dataset(samples, str(path), labels=labels)

        return _memo(
            cache,
            lambda: {
                "sources": image_dir_sources(path),
                "shape": list(shape),
                "library": installed_version("scikit-image"),
            },
            {"count": count, "preprocess": pp, "path": str(path)},
            from_dir,
        )
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return _from_npz(path, model, count)
    if ":" in spec and spec.rpartition(":")[0].endswith(".py"):
        return _from_callable(spec, model, count)
    if not path.exists():
        raise DataError(
            f"{purpose} data not found: {spec}",
            hint="give a directory of images, a .npz, file.py:function, 'builtin' or (explicitly) 'random'",
        )
    raise DataError(f"{spec}: not a directory, .npz or file.py:function")


def image_dir_sources(folder: Path) -> list[tuple[str, str]]:
    """(relative path, sha256) of every image under ``folder``, sorted: what a decoded dataset depends on."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p.relative_to(folder).as_posix(), sha256_file(p)) for p in files]


def _memo(
    cache: Cache | None,
    sources_of: Callable[[], dict[str, Any]],
    options: dict[str, Any],
    build: Callable[[], Dataset],
) -> Dataset:
    """``build()``, or the Dataset it gave before for the same sources (file hashes, versions) and ``options``."""
    if cache is None or not cache.enabled:
        return build()
    sources = sources_of()
    if sources.get("sources") is None:
        return build()
    from packager.cache import code_hash, make_key

    key = make_key(kind="dataset", **sources, **options, code=code_hash("data", "models/builtin.py"))
    meta = cache.record("datasets", key)
    arrays = cache.arrays("datasets", key) if meta is not None else None
    if meta is not None and arrays is not None and len(arrays) == meta["inputs"] + int(meta["labelled"]):
        k = meta["inputs"]
        n = len(arrays[0]) if k else 0
        samples = [tuple(arrays[i][j] for i in range(k)) for j in range(n)]
        return Dataset(samples, meta["source"], synthetic=False, labels=arrays[k] if meta["labelled"] else None)
    ds = build()
    if ds.samples:
        k = len(ds.samples[0])
        stacked = [np.stack([s[i] for s in ds.samples]) for i in range(k)]
        labels = [np.asarray(ds.labels)] if ds.labels is not None else []
        cache.put_arrays("datasets", key, stacked + labels)
        cache.put_record("datasets", key, {"source": ds.source, "inputs": k, "labelled": ds.labels is not None})
    return ds


__all__ = ["ModelError", "load_dataset"]
