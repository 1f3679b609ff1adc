"""Model loading: a spec string becomes a :class:`~packager.types.LoadedModel`.

Spec forms, checked in this order::

    efficientnet-lite0              a built-in (BUILTIN_MODELS registry; a typo suggests the nearest)
    path/to/model.pt2               a saved torch.export program
    path/to/file.py:factory         a factory in a user's file
    package.module:factory          a factory in an importable module

A factory returns an ``nn.Module`` or ``(module, example_inputs)``. A wrong
path or attribute is a UsageError (exit 2); a factory that raises, or a model
that cannot run on its example input, is a ModelError (exit 5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from packager.models.loaders import load_model, parse_input_shapes
from packager.models.registry import BUILTIN_MODELS


def model_fingerprint(spec: str) -> str | None:
    """A string that changes whenever what ``spec`` loads as could change, computed without torch; None where
    only loading can tell (a factory runs arbitrary code, so its model is loaded every time).

    Built-ins: their weights file, loading code and package versions (:func:`packager.models.builtin.fingerprint`).
    ``.pt2``: the file's bytes and the loading code. Library versions are added by the cache key.
    """
    if spec in BUILTIN_MODELS:
        from packager.models.builtin import fingerprint

        return fingerprint(spec)
    if spec.endswith(".pt2") and Path(spec).is_file():
        from packager.cache import code_hash

        h = hashlib.sha256(code_hash("models/loaders.py").encode())
        with Path(spec).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    return None


__all__ = ["BUILTIN_MODELS", "load_model", "model_fingerprint", "parse_input_shapes"]
