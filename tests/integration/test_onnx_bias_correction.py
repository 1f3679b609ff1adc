"""Bias correction of ORT QDQ int8 models (packager/export/bias_correction.py), on real onnxruntime sessions.

The first test uses a hand-built fp32/"quantized" pair. Its weight error is known, so the expected
correction can be worked out by hand. The others quantize a tiny depthwise-separable net with
onnxruntime's real quantize_static. The EfficientNet-Lite0 numbers are in test_pkg_efficientnet.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from packager.export.bias_correction import _channel_means, _conv_targets, correct_biases, sequential_correction
from packager.export.onnx import OnnxExporter
from tests.integration.export_models import DWNet, bias_reports, calibration, loaded

pytest.importorskip("onnxruntime")
C = 4


def _two_convs(w_a: np.ndarray, w_b: np.ndarray) -> onnx.ModelProto:
    """x -> Conv A (1x1, bias) -> Conv B (1x1, bias) -> y, with float biases (zeros)."""
    inits = [
        numpy_helper.from_array(w_a.reshape(C, C, 1, 1).astype(np.float32), "wa"),
        numpy_helper.from_array(np.zeros(C, np.float32), "ba"),
        numpy_helper.from_array(w_b.reshape(C, C, 1, 1).astype(np.float32), "wb"),
        numpy_helper.from_array(np.zeros(C, np.float32), "bb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["a", "wb", "bb"], ["y"], name="conv_b"),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _bias(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_sequential_correction_fixes_each_shift_once() -> None:
    rng = np.random.default_rng(0)
    w_a, w_b = rng.standard_normal((C, C)), rng.standard_normal((C, C))
    delta = rng.uniform(-0.05, 0.05, (C, C))  # A's "rounding error"; B's weights are exact
    fp32, quant = _two_convs(w_a, w_b), _two_convs(w_a + delta, w_b)
    feeds = [{"x": (1.0 + 0.3 * rng.standard_normal((1, C, 6, 6))).astype(np.float32)} for _ in range(8)]
    mean_x = np.mean([f["x"].astype(np.float64).mean(axis=(0, 2, 3)) for f in feeds], axis=0)

    corrected, layers, left_out = sequential_correction(fp32, quant, feeds)

    assert left_out == 0 and [la["output"] for la in layers] == ["a", "y"]
    # A: exactly the mean its weight error adds, delta @ E[x], taken off the bias
    np.testing.assert_allclose(_bias(corrected, "ba"), -(delta @ mean_x), atol=1e-5)
    # B: once A is corrected its input mean is right again, so B needs nothing. Correcting every layer from
    # one measurement would also shift B by w_b @ (delta @ E[x]) and so count A's error twice.
    np.testing.assert_allclose(_bias(corrected, "bb"), 0.0, atol=1e-5)
    got = _channel_means(corrected, ["y"], feeds)[0]
    want = _channel_means(fp32, ["y"], feeds)[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.all(_bias(quant, "ba") == 0)  # the input model is left alone


def test_a_model_that_needs_no_correction_is_returned_as_is() -> None:
    rng = np.random.default_rng(1)
    model = _two_convs(rng.standard_normal((C, C)), rng.standard_normal((C, C)))
    feeds = [{"x": rng.standard_normal((1, C, 6, 6)).astype(np.float32)} for _ in range(4)]
    out, report = correct_biases(model, model, feeds)
    assert out is model
    assert report["applied"] is False and "not closer" in report["reason"]
    assert report["layers"] == 2 and report["samples"] == 4


SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def dwnet(tmp_path_factory):
    torch.manual_seed(1)
    model = loaded(DWNet(), SHAPE, "dwnet", in_name="image")
    cal = calibration(SHAPE, n=16, seed=1)
    out = tmp_path_factory.mktemp("bc")
    plain = OnnxExporter(bias_correction=False).export(model, "int8", cal, out / "plain")
    fixed = OnnxExporter().export(model, "int8", cal, out / "fixed")
    fp32 = OnnxExporter().export(model, "fp32", None, out / "fp32")
    feeds = [{"image": s[0]} for s in cal.samples]
    return fp32.path, plain, fixed, feeds


def test_exporter_changes_only_bias_values(dwnet) -> None:
    _, plain, fixed, _ = dwnet
    report = bias_reports(plain, fixed, layers=7, samples=16)
    a, b = onnx.load(str(plain.path)), onnx.load(str(fixed.path))
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in b.graph.node
    ]
    ia = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    assert ia.keys() == ib.keys()
    changed = sorted(k for k in ia if not np.array_equal(ia[k], ib[k]))
    assert all(k.endswith("bias_quantized") for k in changed), changed
    assert len(changed) == (7 if report["applied"] else 0)
    # no temporaries left: the artifact and its op map
    assert sorted(p.name for p in fixed.path.parent.iterdir()) == ["dwnet-int8.onnx", "dwnet-int8.opmap.json"]


def test_after_correction_every_conv_mean_is_within_half_a_bias_step(dwnet) -> None:
    fp32_path, plain, _, feeds = dwnet
    fp32, quant = onnx.load(str(fp32_path)), onnx.load(str(plain.path))
    corrected, layers, _ = sequential_correction(fp32, quant, feeds)
    assert len(layers) == 7

    def worst_excess(model: onnx.ModelProto) -> float:
        """Largest per-channel |mean(quant) - mean(fp32)| beyond half a bias step, over all Convs."""
        targets, _ = _conv_targets(fp32, model)
        got = _channel_means(model, [q for q, _, _ in targets], feeds)
        want = _channel_means(fp32, [f for _, f, _ in targets], feeds)
        return max(
            float(np.max(np.abs(g - w) - bias.scale / 2)) for (_, _, bias), g, w in zip(targets, got, want, strict=True)
        )

    assert worst_excess(corrected) <= 1e-6
    assert worst_excess(quant) > 1e-4  # int8 rounding really did shift the means: there was something to fix


def test_recipe_switch_reaches_both_exporters(tmp_path: Path) -> None:
    from packager.pipeline import package
    from packager.recipe import Recipe

    def int8(bias_correction: bool) -> dict[str, dict]:
        out = tmp_path / f"bc-{bias_correction}"
        recipe = Recipe(
            model="digits-cnn",
            backends=("executorch", "onnx"),
            schemes=("int8",),
            out=str(out),
            cache=False,
            bias_correction=bias_correction,
        )
        manifest = package(recipe).manifest
        assert manifest["recipe"]["bias_correction"] is bias_correction
        return {a["backend"]: a["details"]["quantizer"]["bias_correction"] for a in manifest["artifacts"]}

    for report in int8(False).values():
        assert report["reason"] == "turned off (bias_correction: false)"
    for report in int8(True).values():
        assert report["layers"] == 2 and report["samples"] == 32, report  # digits-cnn: two biased Convs


def test_recipe_rejects_a_non_boolean_switch() -> None:
    from mpk.errors import ConfigError
    from packager.recipe import Recipe

    with pytest.raises(ConfigError, match="bias_correction: expected true or false"):
        Recipe.from_dict({"model": "digits-cnn", "bias_correction": "yes"})
