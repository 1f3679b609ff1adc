"""Built-in data for the built-in models, with no download.

EfficientNet-Lite0: the photos shipped inside scikit-image (cat, coffee,
rocket, astronaut, two motorcycles, Hubble field, and the grayscale cameraman
converted to RGB): 8 photos x 12 deterministic views (2 scales x 3 crop
anchors x 2 flips) = 96 evaluation samples. Calibration and evaluation use
disjoint scales, so no evaluation view was seen by calibration. These are not
labelled ImageNet images: evaluation measures agreement with fp32, not
accuracy. The grayscale textures (grass, gravel, brick) are left out on
purpose: fp32 puts under 5% on its top class there (top-1 margin ~0.01), so
"top-1 agreement" on them measures noise, not the quantizer.

digits-cnn: calibration = the train split, evaluation = the labelled test split.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import DataError
from mpk.files import installed_version, sha256_file
from packager.data.images import read_image, resize_shorter, to_input
from packager.models.loaders import example_shape
from packager.types import Dataset, LoadedModel, ModelInfo

SKIMAGE_PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "camera.png",
)

#: (shorter-side scale factor over the crop, crop anchor, flip). Scales differ between purposes -> disjoint views.
_VIEWS: dict[str, list[tuple[float, str, bool]]] = {
    "evaluation": [(s, c, f) for s, c, f in itertools.product((8 / 7, 10 / 7), ("center", "tl", "br"), (False, True))],
    "calibration": [(s, c, f) for s, c, f in itertools.product((9 / 7, 11 / 7), ("center", "tr", "bl"), (False, True))],
}


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


#: the other natural images in skimage/data, never used for calibration or evaluation: a held-out check for
#: quantizer changes (bench/bias_correction.py). Several are textures or diagrams on which fp32 itself is
#: unsure, so compare agreement there on the samples fp32 is confident about.
HELD_OUT_PHOTOS = (
    "brick.png",
    "cell.png",
    "chessboard_RGB.png",
    "clock_motion.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "horse.png",
    "ihc.png",
    "logo.png",
    "microaneurysms.png",
    "moon.png",
    "page.png",
    "phantom.png",
    "retina.jpg",
    "text.png",
)


def photo_views(
    names: tuple[str, ...],
    shape: tuple[int, ...],
    preprocess: dict[str, Any] | None,
    count: int | None,
    purpose: str,
) -> Dataset:
    """The ``purpose`` views (see _VIEWS) of the skimage photos ``names``, view-major."""
    folder = skimage_data_dir()
    images = [read_image(folder / name) for name in names if (folder / name).is_file()]
    if not images:
        raise DataError(f"no built-in photos found in {folder}")
    crop = max(shape[2], shape[3])
    resized: dict[tuple[int, float], np.ndarray] = {}
    samples = []
    # view-major order, so the first `count` samples cover every photo before repeating one
    for scale, anchor, flip in _VIEWS[purpose]:
        for i, img in enumerate(images):
            if count and len(samples) >= count:
                break
            key = (i, scale)
            if key not in resized:
                resized[key] = resize_shorter(img, round(crop * scale))
            samples.append((to_input(resized[key], shape, preprocess, crop=anchor, flip=flip),))
    return Dataset(samples, f"builtin:skimage-photos ({len(images)} photos x views, {purpose})")


def _digits(count: int | None, purpose: str) -> Dataset:
    from packager.models.builtin import digits_split

    xtr, ytr, xte, yte = digits_split()
    x, y = (xtr, ytr) if purpose == "calibration" else (xte, yte)
    n = min(count, len(x)) if count else len(x)
    samples = [(x[i : i + 1],) for i in range(n)]
    split = "train" if purpose == "calibration" else "test"
    return Dataset(
        samples, f"builtin:sklearn-digits ({split} split)", labels=y[:n] if purpose == "evaluation" else None
    )


def builtin_sources(model: ModelInfo | LoadedModel, purpose: str) -> dict[str, Any] | None:
    """What a built-in dataset is made of, for its cache key: the source files' sha256 and the versions of
    the libraries that decode them. None for a model without built-in data (the load then says so)."""

    name = model.source.get("spec") if model.source.get("kind") == "builtin" else None
    if name == "digits-cnn":
        import importlib.util

        spec = importlib.util.find_spec("sklearn")
        folder = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
        if folder is None or not (folder / "digits.csv.gz").is_file():
            return None
        return {
            "digits.csv.gz": sha256_file(folder / "digits.csv.gz"),
            "scikit-learn": installed_version("scikit-learn"),
        }
    if name == "efficientnet-lite0":
        import importlib.util

        spec = importlib.util.find_spec("skimage")
        if spec is None or spec.origin is None:
            return None
        folder = Path(spec.origin).parent / "data"
        photos = {n: sha256_file(folder / n) for n in SKIMAGE_PHOTOS if (folder / n).is_file()}
        return {"photos": photos, "scikit-image": installed_version("scikit-image")} if photos else None
    return None


def builtin_dataset(
    model: ModelInfo | LoadedModel, *, count: int | None, purpose: str, preprocess: dict[str, Any] | None
) -> Dataset:
    name = model.source.get("spec") if model.source.get("kind") == "builtin" else None
    if name == "digits-cnn":
        return _digits(count, purpose)
    if name == "efficientnet-lite0":
        return photo_views(SKIMAGE_PHOTOS, example_shape(model.inputs[0]), preprocess, count, purpose)
    raise DataError(
        f"model {model.name!r} has no built-in {purpose} data",
        hint=f"pass --{purpose} DIR|FILE.npz|file.py:fn (or --{purpose} random to accept synthetic noise)",
    )
