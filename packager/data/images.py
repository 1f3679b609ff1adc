"""Image files -> model inputs: resize the shorter side, crop, flip, normalise. Pure numpy + skimage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

#: crop anchors as (fraction down, fraction across) of the free margin
CROPS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "tl": (0.0, 0.0),
    "tr": (0.0, 1.0),
    "bl": (1.0, 0.0),
    "br": (1.0, 1.0),
}


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB. Grayscale is replicated, alpha dropped; an unreadable file is a DataError naming it."""
    from skimage import io

    try:
        img = np.asarray(io.imread(str(path)))
    except Exception as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)  # multipage/planar TIFF
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    elif img.ndim == 3 and img.shape[-1] == 1:
        img = np.concatenate([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 2:
        raise DataError(f"image {path} has an unusable shape {img.shape}")
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        f = f / f.max() * 255.0 if f.max() > 255 or f.max() <= 1.0 else f
        img = np.clip(f, 0, 255).astype(np.uint8)
    return img


def resize_shorter(img: np.ndarray, side: int) -> np.ndarray:
    from skimage.transform import resize

    h, w = img.shape[:2]
    s = side / min(h, w)
    out = resize(img, (max(side, round(h * s)), max(side, round(w * s))), anti_aliasing=True, preserve_range=True)
    return out.astype(np.float32)


def to_input(
    resized: np.ndarray,
    shape: tuple[int, ...],
    preprocess: dict[str, Any] | None,
    *,
    crop: str = "center",
    flip: bool = False,
) -> np.ndarray:
    """Crop ``resized`` (HxWx3 float, 0..255) to the input's H, W at anchor ``crop`` -> (1, C, H, W) float32."""
    _, c, h, w = shape
    fy, fx = CROPS[crop]
    top = round((resized.shape[0] - h) * fy)
    left = round((resized.shape[1] - w) * fx)
    x = resized[top : top + h, left : left + w]
    if flip:
        x = x[:, ::-1]
    pp = preprocess or {}
    if c == 1:
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if "mean" in pp and "std" in pp:
        x = (x - np.asarray(pp["mean"][:c], np.float32)) / np.asarray(pp["std"][:c], np.float32)
    else:
        x = x / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def image_size_for(shape: tuple[int, ...], preprocess: dict[str, Any] | None) -> int:
    """Shorter-side resize target: the recipe's ``resize_shorter``, else the crop size + 1/7 (224 -> 256)."""
    pp = preprocess or {}
    return int(pp.get("resize_shorter") or round(max(shape[2], shape[3]) * 8 / 7))


def load_image_dir(
    folder: Path, shape: tuple[int, ...], preprocess: dict[str, Any] | None, count: int | None
) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray | None]:
    """Every image under ``folder`` (sorted). Sub-folders named by an integer are class labels."""
    if len(shape) != 4:
        raise DataError(f"{folder}: an image directory needs a 4-D NCHW model input, the model takes {shape}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    if count:
        files = files[:count]
    side = image_size_for(shape, preprocess)
    samples, labels = [], []
    for f in files:
        samples.append((to_input(resize_shorter(read_image(f), side), shape, preprocess),))
        parent = f.parent.name
        labels.append(int(parent) if f.parent != folder and parent.isdigit() else -1)
    lab = np.asarray(labels, np.int64)
    return samples, (lab if (lab >= 0).all() else None)
