"""Compression that pays on a phone: pruning, recovery (distillation, QAT), mixed precision, recipe search.

Each step is a plain function over an ``nn.Module`` with a frozen config
dataclass, so the pipeline, ``mpk tune`` and a Python caller run the same code:

* :mod:`.unstructured` - magnitude pruning to a sparsity target. Honest about
  size: a dense artifact does not shrink, only its zstd-compressed form does.
* :mod:`.structured` - channel pruning with torch-pruning's dependency graph.
  This is what makes a model smaller *and* faster on a phone.
* :mod:`.distill` - knowledge distillation from the unpruned model, works on
  unlabelled calibration images.
* :mod:`.qat` - PT2E quantization-aware training for the ExecuTorch/XNNPACK path.
* :mod:`.sensitivity` - per-layer quantization sensitivity and mixed precision.
* :mod:`.tune` - grid search over prune ratio x scheme under an accuracy floor.
* :mod:`.recipe_io` - the ``compression:`` recipe section (parse, validate, apply).

This module imports no torch so ``mpk --help`` stays fast; it only holds the
argument checks every step shares.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mpk.errors import UsageError
from mpk.registry import suggest


def check_ratio(value: Any, what: str, *, allow_one: bool = False) -> float:
    """Validate a pruning ratio/amount: a number in [0, 1). 0 means 'do nothing', 1 would delete the layer.

    >>> check_ratio(0.25, "ratio")
    0.25
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if v != v or v < 0.0 or v > 1.0 or (v == 1.0 and not allow_one):
        raise UsageError(
            f"{what} must be in [0, 1), got {value!r}",
            hint="0 keeps every weight; 1 would remove the whole layer, which no model survives",
        )
    return v


def check_layer_names(names: Iterable[str], known: Iterable[str], what: str = "layer") -> list[str]:
    """Every name must be a module of the model; the error suggests the nearest real one."""
    known_list = [k for k in known if k]
    bad = [n for n in names if n not in known_list]
    if bad:
        msgs = [suggest(n, known_list, what) for n in bad]
        # listing every module of EfficientNet would bury the suggestion; keep the first line short
        head = ", ".join(known_list[:8]) + (f", ... ({len(known_list)} in all)" if len(known_list) > 8 else "")
        raise UsageError("; ".join(m.split(" known:")[0] for m in msgs), hint=f"{what}s: {head}")
    return list(names)
