"""Compression that pays on a phone: pruning, recovery (distillation, QAT), mixed precision, the search for how much.

Each step is a plain function over an ``nn.Module`` with a frozen config
dataclass, so the pipeline, ``mpk tune`` and a Python caller run the same code:

* :mod:`.groups` - channel groups (coupled channels) from torch-pruning's dependency graph, and the MACs and
  parameters a plan leaves, predicted without pruning.
* :mod:`.stats` - what each layer reading a group sees: mean and variance per column, from the calibration data
  and from the model's own BatchNorm statistics.
* :mod:`.structured` - channel pruning: mpk scores and picks every channel, folds removed channels' mean into the
  consumers' biases. This is what makes a model smaller *and* faster on a phone.
* :mod:`.allocate` - per-group sensitivity (each group cut alone, measured) and the allocation of per-group
  ratios that reaches a MAC or parameter target at the least predicted loss.
* :mod:`.recovery` - after pruning, before training: least-squares refit of consumers and BatchNorm
  re-estimation relative to the original model, each guarded by agreement on guard data.
* :mod:`.unstructured` - magnitude pruning to a sparsity target or threshold. Honest about size: a dense
  artifact does not shrink, only its zstd-compressed form does.
* :mod:`.distill` - knowledge distillation from the unpruned model (strong augmentation, guarded).
* :mod:`.synthesize` - data-free recovery data: images optimised to match the model's BatchNorm statistics.
* :mod:`.qat` - PT2E quantization-aware training for the ExecuTorch/XNNPACK path.
* :mod:`.sensitivity` - per-layer quantization sensitivity and mixed precision.
* :mod:`.tune` - ``mpk tune``: the largest MAC reduction meeting a floor on held-out data.
* :mod:`.recipe_io` - the ``compression:`` recipe section (parse, validate, apply) and ``mpk package``'s flags.

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
