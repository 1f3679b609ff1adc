"""The int8 arithmetic an ONNX graph defines, evaluated the same way on every CPU.

ONNX Runtime's fused int8 kernels differ by instruction set (:mod:`mpk.hostcpu`); the graph's meaning does not.
:func:`reference_model` rewrites a quantized graph so that ONNX Runtime, run with graph optimisations off,
computes exactly what the graph says: used by verification (``OnnxExporter.open_reference``) and by bias
correction (:mod:`packager.export.bias_correction`), so neither depends on the packaging machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: integer-arithmetic ops ORT runs on MLAS's int8 kernels even with graph optimisation off
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul"}
#: the ones reference_model rewrites into float arithmetic
_REWRITTEN = {"MatMulInteger", "ConvInteger"}


def reference_model(model: Any) -> bytes | None:
    """Serialized copy of ``model`` whose int8 arithmetic no CPU-specific kernel can change.

    What the graph says is computed, nothing else. Evaluated with ONNX Runtime's graph optimisations off,
    a QDQ graph runs as written: DequantizeLinear ((q - zero_point) x scale, float32), the float op,
    QuantizeLinear (round half to even, clamp). Optimised, ORT fuses each DequantizeLinear -> op ->
    QuantizeLinear into an int8 kernel, and on an x86 CPU without VNNI that kernel adds byte products in
    pairs into a saturating int16 (:mod:`mpk.hostcpu`), which the graph does not say. A phone's arm64 kernels
    and VNNI x86 kernels compute the graph exactly, up to float rounding of the requantization.

    Integer ops that stay integer even unoptimised are rewritten: ``MatMulInteger`` becomes
    ``MatMul((A - a_zp), (B - b_zp))`` in float64 (exact for every int32 sum) cast back to int32;
    ``ConvInteger`` likewise with a float32 Conv (ORT has no float64 Conv; sums under 2^24 stay exact).
    Returns None for a graph holding other integer ops (QLinearConv, QGemm, ...): those mpk does not write.
    """
    from onnx import TensorProto, helper

    ops = {n.op_type for n in model.graph.node}
    if (ops & INTEGER_OPS) - _REWRITTEN:
        return None
    m = type(model)()
    m.CopyFrom(model)
    nodes = []
    for k, node in enumerate(m.graph.node):
        if node.op_type not in _REWRITTEN:
            nodes.append(node)
            continue
        dtype = TensorProto.DOUBLE if node.op_type == "MatMulInteger" else TensorProto.FLOAT
        centred = []
        for i, zp_index in ((0, 2), (1, 3)):
            x = f"_mpk_ref{k}_in{i}"
            nodes.append(helper.make_node("Cast", [node.input[i]], [x], to=dtype))
            if len(node.input) > zp_index and node.input[zp_index]:
                zp = f"_mpk_ref{k}_zp{i}"
                nodes.append(helper.make_node("Cast", [node.input[zp_index]], [zp], to=dtype))
                if node.op_type == "ConvInteger" and i == 1:
                    # a per-output-channel weight zero point broadcasts over (M, C, kH, kW) from axis 0
                    shaped = f"_mpk_ref{k}_zpshape"
                    nodes.append(
                        helper.make_node("Unsqueeze", [zp, _const(m, f"_mpk_ref{k}_axes", [1, 2, 3])], [shaped])
                    )
                    zp = shaped
                nodes.append(helper.make_node("Sub", [x, zp], [x + "_c"]))
                x += "_c"
            centred.append(x)
        out = f"_mpk_ref{k}_out"
        if node.op_type == "MatMulInteger":
            nodes.append(helper.make_node("MatMul", centred, [out]))
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            nodes.append(helper.make_node("Conv", centred, [out], **attrs))
        nodes.append(helper.make_node("Round", [out], [out + "_r"]))
        nodes.append(helper.make_node("Cast", [out + "_r"], [node.output[0]], to=TensorProto.INT32))
    del m.graph.node[:]
    m.graph.node.extend(_fold_constant_dequantize(m, nodes))
    return m.SerializeToString()


def _fold_constant_dequantize(model: Any, nodes: list[Any]) -> list[Any]:
    """Replace each DequantizeLinear of initializers (weights, biases) by the float initializer it computes.

    With graph optimisation off ORT would recompute every weight on every run; this is the same float32
    arithmetic ((q - zero_point) x scale, per axis), done once in numpy. Activations keep their Q/DQ nodes.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    kept, used = [], set()
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "DequantizeLinear"
            or node.domain not in ("", "ai.onnx")
            or not all(i in inits for i in node.input if i)
            or attrs.get("block_size", 0)
        ):
            kept.append(node)
            used.update(node.input)
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        axis = int(attrs.get("axis", 1)) % max(q.ndim, 1)
        shape = [1] * q.ndim
        if scale.ndim == 1 and q.ndim:
            shape[axis] = -1
        centred = q.astype(np.int64) - (zp.astype(np.int64).reshape(shape) if zp is not None else 0)
        value = centred.astype(np.float32) * scale.reshape(shape if scale.ndim == 1 else ())
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
    live = [i for i in model.graph.initializer if i.name in used or i.name not in inits]
    graph_inputs = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    live += [i for i in model.graph.initializer if i.name in inits and i.name in graph_inputs and i not in live]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    return kept


def _const(model: Any, name: str, values: list[int]) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    return name
