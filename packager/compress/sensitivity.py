"""Per-layer int8 sensitivity and mixed precision for the ExecuTorch/XNNPACK path.

Method (real quantization, not a simulation of it): the model is captured
once with ``torch.export``; for each Conv/Linear layer a copy of the graph is
quantized with the XNNPACK PT2E quantizer with every annotation outside that
layer dropped, so exactly that layer's weight (int8 per-channel) and input
activation (int8 per-tensor) are quantized with the observers XNNPACK would
use. The converted graph runs in PyTorch (q/dq ops reproduce int8 rounding)
and its logits are compared with fp32: SNR in dB, cosine, top-1 agreement.
The lowest SNR is the most sensitive layer.

Mixed precision then keeps the most sensitive layers in floating point
(their annotations dropped from an otherwise global int8 config) one at a
time until an error budget is met. On XNNPACK a float layer still runs in the
delegate (fp32 kernels), with a dequantize/quantize pair around it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mpk import metrics
from mpk.errors import UsageError
from packager.compress import check_layer_names

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class LayerSensitivity:
    layer: str
    type: str
    params: int
    snr_db: float
    cosine: float
    top1_agreement: float


@dataclass
class MixedPrecisionPlan:
    """Which layers stay float, and the error that choice achieves (``steps``: one row per layer kept float)."""

    keep_float: list[str]
    budget: dict[str, float]
    met: bool
    metrics: dict[str, float]
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: the converted int8 module of the final step (not serialised)
    module: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "module"}


def compare(ref: list[np.ndarray], out: list[np.ndarray]) -> dict[str, float]:
    """SNR (dB), cosine and top-1 agreement of ``out`` vs ``ref`` (one array per batch, first output only), per
    :mod:`mpk.metrics`: the numbers verification and the bench report, rounded for the table. A first output
    of one value per sample has no top-1, and neither has a batch with no clear top-1: both count as 1.0
    (nothing to disagree on)."""
    r = np.concatenate([np.asarray(a).reshape(len(a), -1) for a in ref])
    o = np.concatenate([np.asarray(a).reshape(len(a), -1) for a in out])
    m = metrics.compare([r], [o], classifier=r.shape[-1] > 1)
    top1 = m["top1_agreement"]
    return {
        "snr_db": round(float(m["snr_db"]), 3),  # type: ignore[arg-type]
        "cosine": round(float(m["cosine"]), 6),  # type: ignore[arg-type]
        "top1_agreement": round(float(top1), 6) if top1 is not None else 1.0,
    }


def _run(module: Any, batches: list[tuple[torch.Tensor, ...]]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        outs = []
        for b in batches:
            y = module(*b)
            y = y[0] if isinstance(y, (tuple, list)) else y
            outs.append(y.detach().numpy())
        return outs


def quant_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Layers XNNPACK quantizes as units: Conv and Linear."""
    import torch.nn as nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}


def layer_sensitivity(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: list[tuple[torch.Tensor, ...]],
    *,
    evaluation: list[tuple[torch.Tensor, ...]] | None = None,
    layers: list[str] | None = None,
    per_channel: bool = True,
    captured: Any = None,
) -> list[LayerSensitivity]:
    """Quantize one layer at a time; return rows sorted most-sensitive (lowest SNR) first.

    ``evaluation`` defaults to the calibration batches, which flatters every
    layer equally; pass held-out data when there is some.
    """
    from packager.compress.qat import capture, ptq

    known = quant_layers(model)
    names = check_layer_names(layers, known) if layers is not None else list(known)
    if not calibration:
        raise UsageError("sensitivity analysis needs calibration data")
    evaluation = evaluation or calibration
    model.eval()
    ref = _run(model, evaluation)
    captured = captured if captured is not None else capture(model, example_inputs)
    rows = []
    for n in names:
        q = ptq(captured, calibration, only=[n], per_channel=per_channel)
        m = compare(ref, _run(q, evaluation))
        params = sum(p.numel() for p in known[n].parameters())
        rows.append(LayerSensitivity(n, type(known[n]).__name__, params, m["snr_db"], m["cosine"], m["top1_agreement"]))
    rows.sort(key=lambda r: (r.snr_db, r.layer))
    return rows


def _meets(m: dict[str, float], budget: dict[str, float]) -> bool:
    return all(m[k] >= v for k, v in budget.items())


def plan_mixed_precision(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    calibration: list[tuple[torch.Tensor, ...]],
    budget: dict[str, float],
    *,
    evaluation: list[tuple[torch.Tensor, ...]] | None = None,
    sensitivities: list[LayerSensitivity] | None = None,
    max_float_layers: int | None = None,
    per_channel: bool = True,
    captured: Any = None,
) -> MixedPrecisionPlan:
    """Keep the most sensitive layers in float, one more at a time, until every ``budget`` metric is met.

    ``budget={"snr_db": 30}`` stops at the first plan whose logits are within 30 dB
    SNR of fp32; ``{"top1_agreement": 0.99}`` at 99% same top-1.
    """
    from packager.compress.qat import capture, ptq

    bad = [k for k in budget if k not in ("snr_db", "cosine", "top1_agreement")]
    if bad or not budget:
        raise UsageError(f"mixed-precision budget keys must be snr_db, cosine or top1_agreement; got {sorted(budget)}")
    evaluation = evaluation or calibration
    captured = captured if captured is not None else capture(model, example_inputs)
    if sensitivities is None:
        sensitivities = layer_sensitivity(model, example_inputs, calibration, evaluation=evaluation, captured=captured)
    order = [s.layer for s in sensitivities]
    limit = len(order) if max_float_layers is None else min(max_float_layers, len(order))
    ref = _run(model.eval(), evaluation)
    keep: list[str] = []
    steps = []
    while True:
        q = ptq(captured, calibration, keep_float=keep, per_channel=per_channel)
        m = compare(ref, _run(q, evaluation))
        steps.append({"keep_float": list(keep), **m})
        if _meets(m, budget) or len(keep) >= limit:
            return MixedPrecisionPlan(list(keep), dict(budget), _meets(m, budget), m, steps, module=q)
        keep.append(order[len(keep)])


def format_table(rows: list[LayerSensitivity]) -> str:
    """Plain-text table, most sensitive first (also what the manifest's ``compression.sensitivity`` lists)."""
    head = f"{'layer':<40} {'type':<8} {'params':>9} {'SNR dB':>8} {'cosine':>9} {'top1':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.layer:<40} {r.type:<8} {r.params:>9} {r.snr_db:>8.2f} {r.cosine:>9.5f} {r.top1_agreement:>6.3f}"
        )
    return "\n".join(lines)


def to_manifest(rows: list[LayerSensitivity]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
