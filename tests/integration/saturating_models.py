"""Two tiny int8 ONNX graphs whose exact result ONNX Runtime's x86 kernels without VNNI cannot compute.

Both multiply 16 activations of 1.0 (uint8 255 at scale 1/255) by 16 weights of 1.0 (int8 127 at scale
1/127): the graph says 16.0. ``vpmaddubsw`` adds the byte products in pairs into a saturating int16, and one
pair is 2 x 255 x 127 = 64,770 > 32,767, so an AVX2 (or AVX-512 without VNNI) kernel computes 8 x 32,767 =
262,136 instead of 518,160, i.e. 8.06 instead of 16.0. ARM64 and VNNI kernels compute 16.0.

* :func:`qdq_conv`: the static-quantization form mpk writes (QuantizeLinear/DequantizeLinear around a 1x1
  Conv), which ORT fuses into QLinearConv when optimising.
* :func:`dynamic_matmul`: the dynamic form (DynamicQuantizeLinear + MatMulInteger), integer even unoptimised.

Kept import-light (onnx, numpy) so a test can run it in a child process under ``qemu-x86_64 -cpu Haswell``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

K = 16
EXACT = 16.0
#: what a saturating kernel computes: 8 pairs of 32,767, at the same scales
SATURATED = 8 * 32767 / (255 * 127)


def _model(nodes: list, inits: list, x_shape: list[int], y_shape: list[int]) -> bytes:
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def qdq_conv() -> bytes:
    inits = [
        numpy_helper.from_array(np.float32(1 / 255), "xs"),
        numpy_helper.from_array(np.uint8(0), "xz"),
        numpy_helper.from_array(np.full((1, K, 1, 1), 127, np.int8), "wq"),
        numpy_helper.from_array(np.float32(1 / 127), "ws"),
        numpy_helper.from_array(np.int8(0), "wz"),
        numpy_helper.from_array(np.float32(EXACT / 250), "ys"),  # 16.0 -> 250, 8.06 -> 126
        numpy_helper.from_array(np.uint8(0), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
    ]
    return _model(nodes, inits, [1, K, 1, 1], [1, 1, 1, 1])


def dynamic_matmul() -> bytes:
    inits = [
        numpy_helper.from_array(np.full((K, 1), 127, np.int8), "wq"),
        numpy_helper.from_array(np.int8(0), "wz"),
        numpy_helper.from_array(np.float32(1 / 127), "ws"),
    ]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "wq", "xz", "wz"], ["acc"], name="matmul"),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["s"]),
        helper.make_node("Mul", ["accf", "s"], ["y"]),
    ]
    return _model(nodes, inits, [1, K], [1, 1])


def inputs(which: str) -> np.ndarray:
    return np.ones((1, K, 1, 1) if which == "qdq_conv" else (1, K), np.float32)


def evaluate() -> dict:
    """{model: {"host": y, "reference": y}} on this process's CPU, plus mpk's view of that CPU."""
    import onnxruntime as ort

    from mpk.hostcpu import describe
    from packager.export.onnx import OnnxSession
    from packager.export.onnx_reference import reference_model

    out: dict = {"cpu": describe()}
    for name, make in (("qdq_conv", qdq_conv), ("dynamic_matmul", dynamic_matmul)):
        model = make()
        x = inputs(name)
        host = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        ref = OnnxSession(reference_model(onnx.load_from_string(model)), optimize=False).run((x,))[0]
        out[name] = {"host": float(np.ravel(host)[0]), "reference": float(np.ravel(ref)[0])}
    return out


if __name__ == "__main__":
    json.dump(evaluate(), sys.stdout)
