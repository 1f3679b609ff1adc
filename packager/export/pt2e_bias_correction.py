"""Empirical bias correction for PT2E int8 (ExecuTorch): the same method as
:mod:`packager.export.bias_correction` applies to ONNX, on a ``convert_pt2e`` graph.

XNNPACK's int8 conv, like ORT's, rounds the weights and leaves each output channel's mean a little off;
the shift adds up layer after layer. mpk measures it and takes it off each Conv's bias, Conv by Conv in
graph order, so a layer is measured only after every layer before it has been corrected (correcting all
layers from one measurement counts an upstream shift twice).

Where the fp32 means come from. ``prepare_pt2e`` folds each BatchNorm into its conv, so the fp32 twin of a
converted conv is the conv of the *prepared* graph, with the same node name. Its outputs are recorded while
calibration runs (observers do not change values), so no second fp32 pass is needed.

How the sequential correction stays cheap. Rather than one forward pass per corrected layer (49 x 32 passes
for EfficientNet-Lite0), the converted graph is walked once, node by node, holding every calibration
sample's value. At each Conv its channel means are taken over all samples, the shift is subtracted from
the bias, and the same shift from the values already computed (``conv(x, w, b - s) == conv(x, w, b) - s``),
so every later node sees the corrected layer. That is exactly the sequential method at the cost of one pass
per sample.

The biases are float in the converted graph (XNNPACK quantizes them to int32 when it packs the weights),
so only their values change; the graph and every quantization parameter are left as they are. The result
is kept only if :func:`packager.export.bias_correction.closer_to_fp32` says the corrected outputs are
closer to fp32 on the calibration samples; otherwise the original biases are put back.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from packager.export.bias_correction import MAX_SAMPLES, closer_to_fp32

_CONVS = frozenset({"aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default"})


def _is_conv(node: Any) -> bool:
    return node.op == "call_function" and str(node.target) in _CONVS


def _channel_mean(t: Any) -> np.ndarray:
    """Mean over every axis but 1 (channels), in float64."""
    a = t.detach().double()
    return a.mean(dim=tuple(d for d in range(a.ndim) if d != 1)).numpy()


def _leaves(value: Any) -> list[np.ndarray]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [x.detach().double().numpy() for x in tree_leaves(value) if isinstance(x, torch.Tensor)]


class Fp32Record:
    """What calibration saw in fp32: each conv's per-channel output mean, and the model outputs."""

    def __init__(self) -> None:
        self.sums: dict[str, np.ndarray] = {}
        self.outputs: list[list[np.ndarray]] = []

    def means(self) -> dict[str, np.ndarray]:
        return {k: v / len(self.outputs) for k, v in self.sums.items()}


def calibrate(prepared: Any, samples: Sequence[tuple[Any, ...]], *, record: int = MAX_SAMPLES) -> Fp32Record:
    """Run calibration through ``prepared`` (a ``prepare_pt2e`` module), recording conv means on the first
    ``record`` samples. The observers see every sample exactly as with ``prepared(*sample)``."""
    import torch

    rec = Fp32Record()

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if _is_conv(n):
                m = _channel_mean(out)
                rec.sums[n.name] = rec.sums[n.name] + m if n.name in rec.sums else m
            return out

    with torch.no_grad():
        for k, sample in enumerate(samples):
            if k < record:
                rec.outputs.append(_leaves(Recorder(prepared).run(*sample)))
            else:
                prepared(*sample)
    return rec


def _attr(module: Any, target: str) -> Any:
    """The tensor a get_attr node names (a dotted path such as ``_conv_stem.weight_bias``)."""
    return operator.attrgetter(target)(module)


def _bias_of(node: Any) -> Any:
    """The get_attr node holding a conv's bias when only this conv uses it, else None."""
    import torch

    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if isinstance(bias, torch.fx.Node) and bias.op == "get_attr" and len(bias.users) == 1:
        return bias
    return None


def _own_biases(converted: Any, targets: list[Any]) -> None:
    """Give each target conv's bias a tensor of its own before correcting it in place.

    ``convert_pt2e`` keeps a float conv bias as the *same* tensor as the user's module parameter: corrected in
    place, it changed the model that every later export of the same run read (an fp32 artifact then carried the
    int8 shifts, 61 dB SNR against PyTorch instead of > 100).
    """
    import torch

    for n in targets:
        path = _bias_of(n).target
        owner_path, _, name = path.rpartition(".")
        owner = converted.get_submodule(owner_path) if owner_path else converted
        tensor = getattr(owner, name)
        copy = tensor.detach().clone()
        setattr(owner, name, torch.nn.Parameter(copy, requires_grad=False) if isinstance(tensor, torch.nn.Parameter)
                else copy)  # fmt: skip


def sequential_correction(
    converted: Any,
    samples: Sequence[tuple[Any, ...]],
    fp32_means: dict[str, np.ndarray],
    *,
    on_layer: Callable[[int, int], None] | None = None,
) -> tuple[list[list[np.ndarray]], list[dict[str, Any]], int]:
    """Correct ``converted``'s conv biases in place, in one pass over the graph with all ``samples``.

    Returns the corrected model's outputs on ``samples`` (flattened), one ``{"output", "largest_shift"}``
    per corrected conv, and how many convs were left out (no bias of their own, or no fp32 twin).
    """
    import torch
    from torch.fx.node import map_arg

    nodes = list(converted.graph.nodes)
    last_use = {a: i for i, n in enumerate(nodes) for a in n.all_input_nodes}
    convs = [n for n in nodes if _is_conv(n)]
    todo = {n for n in convs if n.name in fp32_means and _bias_of(n) is not None}
    env: dict[Any, list[Any]] = {}
    placeholder = 0
    layers: list[dict[str, Any]] = []
    result: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i, node in enumerate(nodes):
            if node.op == "placeholder":
                env[node] = [s[placeholder] for s in samples]
                placeholder += 1
            elif node.op == "get_attr":
                env[node] = [_attr(converted, node.target)] * len(samples)
            elif node.op == "output":
                result = [_leaves(map_arg(node.args[0], lambda a, j=j: env[a][j])) for j in range(len(samples))]
            else:
                fn = converted.get_submodule(node.target) if node.op == "call_module" else node.target
                values = []
                for j in range(len(samples)):
                    args = map_arg(node.args, lambda a, j=j: env[a][j])
                    kwargs = map_arg(node.kwargs, lambda a, j=j: env[a][j])
                    if node.op == "call_method":
                        values.append(getattr(args[0], node.target)(*args[1:], **kwargs))
                    else:
                        values.append(fn(*args, **kwargs))
                if node in todo:
                    shift = sum(_channel_mean(v) for v in values) / len(values) - fp32_means[node.name]
                    bias = _attr(converted, _bias_of(node).target)
                    bias -= torch.from_numpy(shift).to(bias.dtype)
                    step = torch.from_numpy(shift).to(values[0].dtype).reshape([1, -1] + [1] * (values[0].ndim - 2))
                    values = [v - step for v in values]
                    layers.append({"output": node.name, "largest_shift": float(np.max(np.abs(shift)))})
                    if on_layer:
                        on_layer(len(layers), len(todo))
                env[node] = values
            for a in node.all_input_nodes:
                if last_use.get(a) == i:
                    env.pop(a, None)
    return result, layers, len(convs) - len(todo)


def correct_biases(
    converted: Any,
    samples: Sequence[tuple[Any, ...]],
    fp32: Fp32Record,
    *,
    on_layer: Callable[[int, int], None] | None = None,
    outputs: list[list[np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Bias-correct ``converted`` (a ``convert_pt2e`` module) in place against what :func:`calibrate` recorded.

    ``samples`` must be the calibration samples ``fp32`` was recorded on, in the same order (the first
    ``len(fp32.outputs)`` are used). The biases are put back when the corrected outputs are not closer to
    fp32. Returns the report for the manifest. A list passed as ``outputs`` receives the returned model's
    outputs on those samples (with the biases it keeps), so a caller checking it need not run them again.
    """
    import torch

    start = time.perf_counter()
    samples = list(samples)[: len(fp32.outputs)]
    targets = [n for n in converted.graph.nodes if _is_conv(n) and _bias_of(n) is not None]
    report: dict[str, Any] = {"method": "empirical, sequential (Nagel et al. 2019)", "samples": len(samples)}
    if not targets or not samples:
        convs = sum(1 for n in converted.graph.nodes if _is_conv(n))
        reason = "no samples" if not samples else "no biased Conv to correct"
        report.update(layers=0, layers_left_out=convs, applied=False, reason=reason)
        return report
    _own_biases(converted, targets)
    saved = {n.name: _attr(converted, _bias_of(n).target).detach().clone() for n in targets}

    def put_back() -> None:
        with torch.no_grad():
            for n in targets:
                _attr(converted, _bias_of(n).target).copy_(saved[n.name])

    try:
        with torch.no_grad():
            before = [_leaves(converted(*s)) for s in samples]
        after, layers, left_out = sequential_correction(converted, samples, fp32.means(), on_layer=on_layer)
        applied, numbers = closer_to_fp32(fp32.outputs, before, after)
    except Exception as e:  # the quantized model without correction is still a good artifact: keep it, say why
        put_back()
        report.update(applied=False, reason=f"correction failed, left out: {type(e).__name__}: {e}"[:300])
        return report
    report.update(layers=len(layers), layers_left_out=left_out, applied=applied)
    report.update(
        largest_channel_shift=round(max(la["largest_shift"] for la in layers), 6),
        **numbers,
        seconds=round(time.perf_counter() - start, 2),
    )
    if not applied:
        put_back()
        report["reason"] = "corrected outputs were not closer to fp32 on the calibration samples"
    if outputs is not None:
        outputs.extend(after if applied else before)
    return report
