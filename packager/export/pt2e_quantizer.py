"""mpk's XNNPACK quantizer for PT2E: what ExecuTorch's XNNPACK runs well in int8, and nothing that breaks the graph.

Three things on top of ExecuTorch's ``XNNPACKQuantizer``:

* **Integer arithmetic stays integer.** The stock quantizer's ``transform_for_annotation`` turns every scalar of an
  ``add``/``mul`` into a float32 tensor constant, including ``arange(n) + 0`` in a text model's position ids: the
  index becomes float and the model fails (``tensors used as indices must be long``). Here only scalars of float
  arithmetic become tensors.
* **A policy per graph** (:func:`policy_for`). In a graph with attention or LayerNorm (transformers, ConvNeXt), only
  ``linear``/``conv`` (with their fused ReLU/clamp) are quantized; residual ``add``s, the attention mask's ``add``,
  ``mul``s and ``cat``s stay float. Their ranges are the problem: a residual stream's outliers and a mask's
  ``-3.4e38`` leave a handful of int8 steps for the values that matter. LayerNorm, softmax, GELU and matmuls of two
  activations are never quantized by XNNPACK's quantizer in the first place. CNN graphs keep the full pattern set.
* **Float fallback** by node name (``floats``): those nodes keep no annotation, so they stay float
  (:mod:`packager.export.layer_errors`).

ReLU6 behind a conv/linear is observed after the clamp, as for ReLU (see :func:`_clamp_aware`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from packager.export.layer_errors import LayerError, module_path, rank, snr_db, source_line

_KEY = "quantization_annotation"
_CLAMPS = ("hardtanh.default", "hardtanh_.default")
_PRODUCERS = ("conv2d.default", "conv1d.default", "linear.default")
#: ops whose presence makes a graph "transformer-like" for the quantization policy
_ATTENTION_MARKERS = (
    "softmax.int", "_softmax.default", "_safe_softmax.default", "scaled_dot_product_attention.default",
    "layer_norm.default", "native_layer_norm.default", "group_norm.default",
)  # fmt: skip
#: patterns kept under the "linear" policy (a node annotated as one of these keeps its annotation)
_LINEAR_OPS = ("linear.default", "conv1d.default", "conv2d.default", "conv3d.default", "conv_transpose2d.input",
               "relu.default", "relu_.default", *_CLAMPS)  # fmt: skip
#: ops measured by the per-layer table (compute, not data movement)
_MEASURED = (
    "linear.default", "conv1d.default", "conv2d.default", "conv3d.default", "add.Tensor", "mul.Tensor",
    "matmul.default", "bmm.default", "layer_norm.default", "softmax.int", "gelu.default", "cat.default",
    "adaptive_avg_pool2d.default", "mean.dim", "scaled_dot_product_attention.default", "relu.default",
    "hardtanh.default", "silu.default", "sigmoid.default", "tanh.default",
)  # fmt: skip


def _name(node: Any) -> str:
    t = node.target
    return f"{getattr(t, '_opname', getattr(t, '__name__', str(t)))}.{getattr(t, '_overloadname', '')}"


POLICY_REASONS = {
    "full": "no attention or layer norm: conv, linear, add, mul, cat and pooling quantized (XNNPACK's patterns)",
    "linear": "attention or layer norm in the graph: only linear and conv quantized; residual and mask adds, muls, "
    "cat, LayerNorm, softmax, GELU and activation x activation matmuls stay float",
}


def policy_for(gm: Any) -> str:
    """``"linear"`` for a graph with attention or layer/group norm, else ``"full"`` (see the module docstring)."""
    return (
        "linear" if any(n.op == "call_function" and _name(n) in _ATTENTION_MARKERS for n in gm.graph.nodes) else "full"
    )


def make_quantizer(*, dynamic: bool, policy: str = "full", floats: frozenset[str] = frozenset()) -> Any:
    """An ``XNNPACKQuantizer`` (symmetric, per-channel) with mpk's three changes (module docstring)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)

    class MpkXNNPACKQuantizer(XNNPACKQuantizer):
        #: names of the nodes this quantizer left annotated (the candidates for float fallback)
        annotated: frozenset[str] = frozenset()

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return _float_scalars_to_attrs(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = self._annotate_for_quantization_config(model)
            if not dynamic:
                _clamp_aware(model, config)
            for node in model.graph.nodes:
                if _KEY not in node.meta:
                    continue
                if node.name in floats or (policy == "linear" and _name(node) not in _LINEAR_OPS):
                    del node.meta[_KEY]
            self.annotated = frozenset(n.name for n in model.graph.nodes if _KEY in n.meta)
            if _has_dynamic_dim(model):
                _float_reductions(model)
            propagate_annotation(model)
            return model

    return MpkXNNPACKQuantizer().set_global(config)


#: reductions XNNPACK runs as its int8 reduce operator (``aten.adaptive_avg_pool2d`` is lowered as a ``mean``)
_REDUCTIONS = ("mean.dim", "mean.default", "adaptive_avg_pool2d.default")


def _has_dynamic_dim(model: Any) -> bool:
    """True when an input of the graph has a symbolic dim (``--input-shape image:batch=1..8x...``)."""
    import torch

    for n in model.graph.nodes:
        val = n.meta.get("val") if n.op == "placeholder" else None
        if isinstance(val, torch.Tensor) and any(isinstance(d, torch.SymInt) for d in val.shape):
            return True
    return False


def _float_reductions(model: Any) -> None:
    """Keep ``mean`` / global average pooling float in a graph with a dynamic dim.

    ExecuTorch 1.4.1's XNNPACK int8 ``mean`` (XNNPACK's reduce operator, whose int32 accumulator workspace is
    sized by the batch) corrupts the heap when a later call runs a larger batch than an earlier one: a conv net
    packaged with ``batch=1..8`` and run at batch 1, then 4, aborts (``free(): invalid pointer``); run at 8
    first it does not, and fp32 ``mean`` never does. Reproduced without mpk (stock ``XNNPACKQuantizer``,
    conv -> conv -> mean). With the reduction float, XNNPACK dequantizes into an fp32 ``mean`` inside the same
    delegate: a few thousand float adds per image, and the program runs at any batch in range.

    An empty annotation marks the node as decided, so ``propagate_annotation`` does not give it its input's
    qparams again (it re-annotates "shared" ops like ``mean`` whose input is quantized).
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        if node.op == "call_function" and _name(node) in _REDUCTIONS:
            node.meta[_KEY] = QuantizationAnnotation(input_qspec_map={}, output_qspec=None, _annotated=True)


def _float_scalars_to_attrs(model: Any) -> Any:
    """ExecuTorch's ``_convert_scalars_to_attrs`` for float ``add``/``mul`` only: an integer one keeps its scalar."""
    import torch
    from torchao.quantization.pt2e.utils import get_new_attr_name_with_prefix

    for n in model.graph.nodes:
        if n.op != "call_function" or n.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            continue
        val = n.meta.get("val")
        if val is None or not getattr(val, "dtype", torch.int64).is_floating_point:
            continue  # index arithmetic (arange + 0): a float constant here makes the index float
        args = []
        for a in n.args:
            if isinstance(a, torch.fx.Node) or not isinstance(a, (int, float)):
                args.append(a)
                continue
            name = get_new_attr_name_with_prefix("_tensor_constant_")(model)
            const = torch.tensor(float(a), dtype=val.dtype)
            model.register_buffer(name, const)
            with model.graph.inserting_before(n):
                attr = model.graph.create_node("get_attr", name, (), {})
                attr.meta["val"] = val.fake_mode.from_tensor(const, static_shapes=True)
            args.append(attr)
        n.args = tuple(args)
    model.recompile()
    return model


def _clamp_aware(model: Any, config: Any) -> None:
    """Conv/linear -> ReLU6 gets the treatment conv/linear -> ReLU already gets: observed behind the clamp.

    The stock quantizer annotates ``hardtanh`` (ReLU6) as sharing its input's quantization parameters, so a
    conv's output is observed *before* the clamp: its int8 grid spans the whole pre-clamp range (often
    -100..100) and only a handful of steps land inside [0, 6]. On EfficientNet-Lite0 (ReLU6 after every
    conv) that costs top-1 agreement with fp32 of ~0.78. Moving the output observer behind the clamp, as
    for conv+relu, quantizes the values that survive: agreement ~0.96. XNNPACK fuses the clamp into the
    conv (its output_min/max), so the lowered graph is the same shape and stays fully delegated.
    """
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        if node.op != "call_function" or _name(node) not in _CLAMPS:
            continue
        src = node.args[0]
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_function"
            and _name(src) in _PRODUCERS
            and _KEY in src.meta
            and len(src.users) == 1
        ):
            src.meta[_KEY].output_qspec = None
            node.meta[_KEY] = QuantizationAnnotation(
                input_qspec_map={}, output_qspec=config.output_activation, _annotated=True
            )


def fp32_twin(module: Any) -> Any:
    """``module`` with each BatchNorm folded into its conv, as ``prepare_pt2e`` folds them: the fp32 graph whose
    nodes compute what the converted graph's nodes of the same name approximate."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(module)
    return module


def weight_elements(gm: Any, names: set[str]) -> int:
    """Elements of the weights of the ``linear``/``conv`` nodes ``names`` (what float fallback keeps at 4 bytes)."""
    import torch

    total = 0
    for n in gm.graph.nodes:
        if n.name in names and len(n.args) > 1 and isinstance(n.args[1], torch.fx.Node):
            w = n.args[1].meta.get("val")
            if w is not None:
                total += int(w.numel())
    return total


def activations(gm: Any, samples: Sequence[tuple[Any, ...]]) -> dict[str, list[np.ndarray]]:
    """The float outputs of ``gm``'s measured nodes on each sample, by node name."""
    import torch

    seen: dict[str, list[np.ndarray]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.op == "call_function" and _name(n) in _MEASURED and isinstance(out, torch.Tensor):
                if out.is_floating_point():
                    seen.setdefault(n.name, []).append(out.detach().double().numpy())
            return out

    with torch.no_grad():
        for s in samples:
            Recorder(gm).run(*s)
    return seen


def layer_errors(
    fp32: Any,
    converted: Any,
    samples: Sequence[tuple[Any, ...]],
    quantized: set[str],
    ref: dict[str, list[np.ndarray]] | None = None,
) -> list[LayerError]:
    """Per-layer SNR of ``converted`` (a ``convert_pt2e`` module) against ``fp32`` (the exported program's module,
    BatchNorm folded: :func:`fp32_twin`), node by node of the same name, over ``samples``; ranked by what each
    layer lost (:func:`packager.export.layer_errors.rank`). ``ref``: ``fp32``'s :func:`activations` when already
    known (the float-fallback search measures several int8 models against one fp32 run)."""
    ref = ref if ref is not None else activations(fp32, samples)
    got = activations(converted, samples)
    names = [n for n in ref if n in got and all(a.shape == b.shape for a, b in zip(ref[n], got[n], strict=False))]
    snrs = {n: snr_db(ref[n], got[n]) for n in names}
    nodes = {n.name: n for n in fp32.graph.nodes}
    inputs = {n: _measured_inputs(nodes[n], set(names)) for n in names if n in nodes}
    ops = {n: _name(nodes[n]).split(".")[0] for n in names if n in nodes}
    rows = rank(snrs, inputs, ops, quantized)
    for r in rows:
        node = nodes.get(r.name)
        if node is not None:
            r.module = module_path(node.meta.get("nn_module_stack"))
            r.source = source_line(node.meta.get("stack_trace"))
    return rows


def _measured_inputs(node: Any, measured: set[str]) -> list[str]:
    """The nearest measured nodes upstream of ``node`` (through data movement: views, permutes, getitems)."""
    out, stack, seen = [], list(node.all_input_nodes), set()
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.name in measured:
            out.append(n.name)
        elif n.op == "call_function":
            stack.extend(n.all_input_nodes)
    return out
