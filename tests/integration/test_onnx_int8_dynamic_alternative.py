"""ONNX int8 of a transformer-like graph whose static QDQ misses: dynamic int8 is tried and shipped when it meets the
tolerance (``--float-fallback auto``), on real ONNX Runtime quantizers and sessions.

The model's input arrives at very different magnitudes per sample (0.01 to 100), as a pretrained BERT's outlier
channels do: one static activation range, fixed at calibration, quantizes the small samples to nothing; dynamic int8
measures each sample's range as it arrives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from packager.export.onnx import OnnxExporter
from packager.types import Dataset
from tests.integration.export_models import cosine, loaded

pytest.importorskip("onnxruntime")
SHAPE = (1, 8, 32)


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 32)
        self.ln = torch.nn.LayerNorm(32)  # makes the ONNX graph "linear" policy (a transformer)
        self.fc2 = torch.nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.ln(self.fc1(x)))


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    scales = np.logspace(-2, 2, 16)
    return Dataset(samples=[((s * rng.standard_normal(SHAPE)).astype(np.float32),) for s in scales],
                   source="test", synthetic=True)  # fmt: skip


@pytest.mark.parametrize("fallback", ["auto", "off"])
def test_static_miss_on_a_transformer_graph_ships_dynamic_int8_that_meets_the_tolerance(
    tmp_path: Path, fallback: str
) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = loaded(Block(), SHAPE, "block")
    data = _data()
    exporter = OnnxExporter()
    exporter.float_fallback = fallback
    art = exporter.export(model, "int8", data, tmp_path)
    q = art.details["quantizer"]
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        cos = np.mean([cosine(model.module(torch.from_numpy(x)).numpy(), sess.run(None, {"x": x})[0])
                       for (x,) in data.samples])  # fmt: skip
    if fallback == "off":  # the user asked for plain static QDQ: it is what they get, and it misses
        assert q["name"] == "quantize_static" and q["calibration_check"]["missed"]
        assert cos < 0.97
        return
    assert q["name"] == "quantize_dynamic" and "static QDQ missed" in q["chosen_because"]
    assert q["static_attempt"]["cosine"] < 0.97 <= q["calibration_check"]["cosine"]
    assert {n.op_type for n in onnx.load(str(art.path)).graph.node} >= {"MatMulInteger"}
    assert cos >= 0.97
    assert "layer_errors" in art.details and "float_fallback" not in art.details
