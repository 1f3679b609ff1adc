"""mpk: package PyTorch models for phones, benchmark them on devices, gate releases.

The two halves live in :mod:`packager` (model -> artifacts) and :mod:`runners`
(artifacts -> measurements -> verdict). This package holds what both share:
the error tree, the typed registries and the thin Click CLI.
"""

__version__ = "0.1.0"
