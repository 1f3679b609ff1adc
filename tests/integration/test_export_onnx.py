"""ONNX exporter through the real stack: torch.onnx (dynamo), onnxruntime quantization, an ORT session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpk.errors import UsageError
from packager.inspect_artifact import inspect_artifact
from packager.runtime import open_session
from tests.integration.export_models import calibration, conv_net, cosine, mlp, torch_out

pytest.importorskip("onnxruntime")
SHAPE = (1, 3, 32, 32)


@pytest.fixture(scope="module")
def exporter():
    from packager.export import get_exporter

    return get_exporter("onnx")


@pytest.fixture(scope="module")
def convnet_artifacts(exporter, tmp_path_factory):
    model = conv_net()
    out = tmp_path_factory.mktemp("onnx")
    calib = calibration(SHAPE)
    return model, out, {s: exporter.export(model, s, calib, out) for s in ("fp32", "int8")}


def test_fp32_is_one_self_contained_file(convnet_artifacts) -> None:
    model, out, arts = convnet_artifacts
    art = arts["fp32"]
    # only the two artifacts and their op maps (not loaded by any runtime): no .onnx.data side file, no temporaries
    assert sorted(p.name for p in out.iterdir()) == ["convnet-fp32.onnx", "convnet-fp32.opmap.json",
                                                     "convnet-int8.onnx", "convnet-int8.opmap.json"]  # fmt: skip
    assert art.profiling_files == {"op_map": out / "convnet-fp32.opmap.json"}
    assert art.extra_files == [] and art.details["external_data"] is False
    info = inspect_artifact(art.path)
    assert info["external_data"] is False
    assert info["inputs"] == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "logits", "shape": [1, 10], "dtype": "float32"}]
    assert info["initializer_bytes"] > 4 * 9000  # the fp32 weights are inside the file
    x = calibration(SHAPE, n=1, seed=7).samples[0][0]
    np.testing.assert_allclose(open_session("onnx", art.path, threads=1).run((x,))[0], torch_out(model, x), atol=1e-4)


def test_int8_is_qdq_smaller_and_close(convnet_artifacts) -> None:
    model, _, arts = convnet_artifacts
    fp32, int8 = arts["fp32"], arts["int8"]
    assert int8.path.stat().st_size < 0.6 * fp32.path.stat().st_size
    assert int8.op_summary["QuantizeLinear"] >= 3 and int8.op_summary["DequantizeLinear"] >= 3
    assert (
        inspect_artifact(int8.path)["qdq_nodes"]
        == int8.op_summary["QuantizeLinear"] + int8.op_summary["DequantizeLinear"]
    )
    assert int8.details["quantizer"]["per_channel"] is True
    x = calibration(SHAPE, n=1, seed=7).samples[0][0]
    assert cosine(open_session("onnx", int8.path).run((x,))[0], torch_out(model, x)) > 0.99


def test_int8_dynamic_quantizes_matmuls(exporter, tmp_path: Path) -> None:
    model = mlp()
    art = exporter.export(model, "int8-dynamic", None, tmp_path)
    assert art.op_summary.get("MatMulInteger", 0) == 2
    x = calibration((1, 64), n=1, seed=2).samples[0][0]
    assert cosine(exporter.open(art.path).run((x,))[0], torch_out(model, x)) > 0.99


def test_corrupt_onnx_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff")
    with pytest.raises(UsageError, match=r"bad\.onnx: not a readable ONNX model"):
        inspect_artifact(bad)
    with pytest.raises(UsageError, match=r"bad\.onnx: not a loadable ONNX model"):
        open_session("onnx", bad)


def test_wrong_input_count_is_a_usage_error(convnet_artifacts) -> None:
    _, _, arts = convnet_artifacts
    with pytest.raises(UsageError, match="takes 1 input"):
        open_session("onnx", arts["fp32"].path).run(())
