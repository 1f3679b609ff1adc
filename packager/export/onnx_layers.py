"""ONNX int8: what to quantize (a policy per graph) and which layer lost accuracy (ONNX Runtime's QDQ debugging tools).

**Policy.** ONNX Runtime's static QDQ quantizer, left to its defaults, puts Q/DQ pairs around nearly every op it
knows: LayerNormalization, Softmax, Where, Gather, Add, Mul, and MatMuls of two activations. On a CNN that is what its
int8 kernels fuse. On a transformer it quantizes exactly the tensors int8 represents worst: the attention mask
(``Where``/``Add`` with -3.4e38), residual streams with outliers, softmax probabilities multiplied into the values.
So a graph with ``Softmax`` or ``LayerNormalization`` (:func:`policy_for`) gets only ``Conv``/``Gemm``/``MatMul``
with a constant weight quantized; everything else stays float, which ONNX Runtime runs as it would in an fp32 model.

**Which layer lost it.** :func:`layer_errors` runs the fp32 and the QDQ model with every intermediate tensor saved
(``onnxruntime.quantization.qdq_loss_debug``: ``modify_model_output_intermediate_tensors`` and
``collect_activations``, with graph optimisations off, so the QDQ arithmetic is the graph's, not this CPU's fused
kernels') and compares each node's output with the fp32 node of the same name. Module paths and source lines come
from the metadata torch.onnx writes on every node (``pkg.torch.onnx.name_scopes``, ``pkg.torch.onnx.stack_trace``).
"""

from __future__ import annotations

import ast
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from packager.export.layer_errors import LayerError, rank, snr_db, source_line

#: ops whose presence makes a graph "transformer-like" for the quantization policy
_ATTENTION_MARKERS = {"Softmax", "LayerNormalization", "SimplifiedLayerNormalization", "Attention"}
#: quantized under the "linear" policy (with a constant weight)
LINEAR_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
#: measured by the per-layer table
_MEASURED = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Sub", "Div", "LayerNormalization", "Softmax", "Relu",
    "Clip", "Sigmoid", "Tanh", "Erf", "Gelu", "Concat", "GlobalAveragePool", "AveragePool", "ReduceMean", "Where",
    "Gather", "MaxPool", "Resize", "HardSigmoid", "HardSwish", "Pow", "Sqrt",
}  # fmt: skip

POLICY_REASONS = {
    "full": "no attention or layer norm: ONNX Runtime's default QDQ op set",
    "linear": "attention or layer norm in the graph: only Conv, Gemm and MatMul with a constant weight quantized; "
    "LayerNormalization, Softmax, Where, Gather, Add, Mul and activation x activation MatMuls stay float",
}


def policy_for(model: Any) -> str:
    """``"linear"`` for a graph with attention or layer norm, else ``"full"`` (see the module docstring)."""
    return "linear" if any(n.op_type in _ATTENTION_MARKERS for n in model.graph.node) else "full"


def overhanging_average_pools(model: Any) -> list[str]:
    """``AveragePool`` nodes with ``ceil_mode=1`` and ``count_include_pad=1`` (PyTorch's ``AvgPool2d(k,
    ceil_mode=True)`` default). ONNX Runtime's fused int8 kernel (QLinearAveragePool) divides a window that
    overhangs the input by the whole kernel area, the float AveragePool (and PyTorch) by the part inside: measured
    on ``AvgPool2d(640, ceil_mode=True)`` over a 700x700 map, the overhanging windows came out 0.024 and 0.0 for
    0.20 and 0.26 (every window overhangs when the kernel is larger than the input: an all-zero output). The
    graph's own arithmetic is right, so only a kernel-level check sees it; these pools are kept float."""
    from onnx import helper

    out = []
    for n in model.graph.node:
        if n.op_type != "AveragePool":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("ceil_mode", 0) and attrs.get("count_include_pad", 0):
            out.append(n.name)
    return out


def quantize_options(model: Any, policy: str) -> dict[str, Any]:
    """``op_types_to_quantize`` and ``nodes_to_exclude`` for ``quantize_static`` under ``policy``."""
    pools = overhanging_average_pools(model)
    if policy != "linear":
        return {"op_types_to_quantize": None, "nodes_to_exclude": pools}
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    two_activations = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input[:2])
    ]
    return {"op_types_to_quantize": LINEAR_OPS, "nodes_to_exclude": two_activations + pools}


def quantized_nodes(qdq: Any) -> set[str]:
    """Nodes of a QDQ model that compute on dequantized inputs (the quantized ops; candidates for float fallback)."""
    dq_outputs = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {
        n.name
        for n in qdq.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input)
    }


def module_path(node: Any) -> str | None:
    """The PyTorch module path torch.onnx recorded for ``node`` (``encoder.layer.0.attention.self.query``)."""
    meta = {p.key: p.value for p in node.metadata_props}
    raw = meta.get("pkg.torch.onnx.name_scopes")
    if not raw:
        return None
    try:
        scopes = [str(s) for s in ast.literal_eval(raw)]
    except (ValueError, SyntaxError):
        return None
    scopes = [s for s in scopes[1:-1] if s]
    if not scopes:
        return None
    # torch.onnx records each level's full path (['', 'layer.0', 'layer.0.conv', '<fx node>']): the innermost is it
    cumulative = all(b.startswith(a + ".") for a, b in itertools.pairwise(scopes))
    return scopes[-1] if cumulative else ".".join(scopes)


def node_source(node: Any) -> str | None:
    meta = {p.key: p.value for p in node.metadata_props}
    return source_line(meta.get("pkg.torch.onnx.stack_trace"))


def _activations(model_path: Path, feeds: list[dict[str, np.ndarray]], folder: Path, tag: str) -> dict[str, list]:
    """Every float intermediate tensor of ``model_path`` on ``feeds`` (ORT's debugging tools, optimisations off)."""
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    augmented = folder / f"{tag}.augmented.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(augmented))

    class Reader:
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def __iter__(self):  # collect_activations iterates the reader
            return iter(feeds)

    return collect_activations(str(augmented), Reader())  # type: ignore[arg-type]


def fp32_activations(fp32_path: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, list]:
    """Every float intermediate tensor of the fp32 model on ``feeds`` (measured once per float-fallback search)."""
    with tempfile.TemporaryDirectory(prefix="mpk-layers-") as tmp:
        return _activations(fp32_path, feeds, Path(tmp), "fp32")


def layer_errors(
    fp32_path: Path,
    qdq_model: Any,
    feeds: list[dict[str, np.ndarray]],
    want: dict[str, list] | None = None,
    exported: Path | None = None,
) -> list[LayerError]:
    """Per-node SNR of ``qdq_model`` against the fp32 model at ``fp32_path`` (the one it was quantized from, so node
    names match), over ``feeds``; ranked by what each node lost (:func:`packager.export.layer_errors.rank`).

    Module paths and source lines come from ``exported`` (torch.onnx's own file) when given: ONNX Runtime's
    pre-processing, which made ``fp32_path``, drops node metadata, and names a fused node after the first node
    it fused (``node_MatMul_8/MatMulAddFusion``).

    The QDQ model is evaluated as written: its integer ops, if any, through :func:`onnx_reference.reference_model`.
    """
    import onnx

    from packager.export.onnx_reference import reference_model

    fp32 = onnx.load(str(fp32_path))
    with tempfile.TemporaryDirectory(prefix="mpk-layers-") as tmp:
        folder = Path(tmp)
        qdq_path = folder / "qdq.onnx"
        ref = reference_model(qdq_model)
        if ref is None:
            return []
        qdq_path.write_bytes(ref)
        want = want if want is not None else _activations(fp32_path, feeds, folder, "fp32")
        got = _activations(qdq_path, feeds, folder, "qdq")
    q_out = {n.name: n.output[0] for n in qdq_model.graph.node if n.output}
    snrs: dict[str, float] = {}
    nodes = {n.name: n for n in fp32.graph.node if n.op_type in _MEASURED and n.output}
    for name, node in nodes.items():
        a, b = want.get(node.output[0]), got.get(q_out.get(name, ""))
        if a is None or b is None or any(x.shape != y.shape for x, y in zip(a, b, strict=False)):
            continue
        snrs[name] = snr_db(a, b)
    producer = {o: n for n in fp32.graph.node for o in n.output}
    inputs = {name: _measured_inputs(nodes[name], producer, set(snrs)) for name in snrs}
    rows = rank(snrs, inputs, {n: nodes[n].op_type for n in snrs}, quantized_nodes(qdq_model))
    described = {n.name: n for n in onnx.load(str(exported), load_external_data=False).graph.node} if exported else {}
    for r in rows:
        node = described.get(r.name) or described.get(r.name.split("/", 1)[0]) or nodes[r.name]
        r.module, r.source = module_path(node), node_source(node)
    return rows


def _measured_inputs(node: Any, producer: dict[str, Any], measured: set[str]) -> list[str]:
    out, stack, seen = [], list(node.input), set()
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.name in measured:
            out.append(n.name)
        else:
            stack.extend(n.input)
    return out
