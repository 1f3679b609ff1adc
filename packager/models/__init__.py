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

from packager.models.loaders import load_model, parse_input_shapes
from packager.models.registry import BUILTIN_MODELS

__all__ = ["BUILTIN_MODELS", "load_model", "parse_input_shapes"]
