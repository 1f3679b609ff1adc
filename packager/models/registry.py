"""The built-in models, by name: lazy ``"module:function"`` entries, so listing them imports no torch.

Its own module so that the loaders and the package both import it, and neither imports the other back.
"""

from __future__ import annotations

from mpk.registry import Registry

#: built-in model name -> "module:function" returning a LoadedModel
BUILTIN_MODELS: Registry[object] = Registry("model", object)
BUILTIN_MODELS.register("efficientnet-lite0", "packager.models.builtin:efficientnet_lite0")
BUILTIN_MODELS.register("digits-cnn", "packager.models.builtin:digits_cnn")
