"""Bias correction for ExecuTorch int8 (packager/export/pt2e_bias_correction.py) on real PT2E graphs.

A small depthwise-separable net goes through the same ``prepare_pt2e`` / ``convert_pt2e`` the ExecuTorch
exporter uses (XNNPACK's quantizer, ReLU6 observed behind the clamp), so the graphs, node names and bias
attributes are the real ones. Nothing is mocked except where a test says so.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from packager.export import pt2e_bias_correction as bc
from packager.export.base import capture
from packager.export.bias_correction import closer_to_fp32
from packager.export.executorch import ExecuTorchExporter
from packager.export.pt2e_quantizer import make_quantizer
from tests.integration.export_models import DWNet, bias_reports, calibration, loaded

SHAPE = (1, 3, 32, 32)


def _biases(gm: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    return {n.name: bc._attr(gm, bc._bias_of(n).target).detach().clone() for n in gm.graph.nodes if bc._is_conv(n)}


@pytest.fixture(scope="module")
def pt2e():
    """(fp32 module, calibration samples, what calibration recorded, the converted int8 graph)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(1)
    model = loaded(DWNet(), SHAPE, "dwnet", in_name="image")
    samples = [tuple(torch.as_tensor(a) for a in s) for s in calibration(SHAPE, n=16, seed=1).samples]
    prepared = prepare_pt2e(capture(model, "executorch").module(), make_quantizer(dynamic=False))
    fp32 = bc.calibrate(prepared, samples)
    return model.module, samples, fp32, convert_pt2e(prepared)


def test_calibration_records_fp32_conv_means_and_outputs(pt2e) -> None:
    module, samples, fp32, _ = pt2e
    assert len(fp32.outputs) == len(samples) == 16
    with torch.no_grad():
        for (got,), s in zip(fp32.outputs, samples, strict=True):
            np.testing.assert_allclose(got, module(*s).double().numpy(), atol=1e-5)  # observers change nothing
    means = fp32.means()
    assert len(means) == 7 and all(m.shape == (16,) for m in means.values())
    # the stem's channel means, computed by hand from the float module (BatchNorm-free, so no folding)
    with torch.no_grad():
        stem = torch.cat([module.stem(*s) for s in samples]).double().mean(dim=(0, 2, 3)).numpy()
    (first,) = [v for k, v in means.items() if k == "conv2d"]
    np.testing.assert_allclose(first, stem, atol=1e-5)


def test_after_correction_every_conv_mean_matches_fp32(pt2e) -> None:
    _, samples, fp32, converted = pt2e
    plain, fixed = converted, copy.deepcopy(converted)
    _, layers, left_out = bc.sequential_correction(fixed, samples, fp32.means())
    assert len(layers) == 7 and left_out == 0

    def worst(gm: torch.fx.GraphModule) -> float:
        """Largest per-channel |mean(int8 conv output) - mean(fp32)| over all convs, measured afresh."""
        got = bc.calibrate(gm, samples).means()
        return max(float(np.max(np.abs(got[k] - want))) for k, want in fp32.means().items())

    # Sequential: each conv is measured after the ones before it are corrected, so every conv ends on fp32's
    # mean. Correcting all from one measurement, or with the sign flipped, leaves later convs off.
    assert worst(fixed) < 1e-5
    assert worst(plain) > 1e-4  # int8 rounding really did shift the means: there was something to fix
    a, b = _biases(plain), _biases(fixed)
    assert all(not torch.equal(a[k], b[k]) for k in a)  # and every conv's bias moved


def test_the_one_pass_walk_gives_what_the_corrected_graph_computes(pt2e) -> None:
    _, samples, fp32, converted = pt2e
    fixed = copy.deepcopy(converted)
    walked, _, _ = bc.sequential_correction(fixed, samples, fp32.means())
    with torch.no_grad():
        for (got,), s in zip(walked, samples, strict=True):
            # conv(x, w, b - s) == conv(x, w, b) - s: the walk's shortcut matches a fresh run of the new graph
            np.testing.assert_allclose(got, fixed(*s).double().numpy(), atol=1e-5)


def _refuse(*_a):
    return (False, {})


def _crash(*_a):
    raise RuntimeError("simulated bug in the guard")


@pytest.mark.parametrize(("guard", "reason"), [(_refuse, "not closer"), (_crash, "correction failed")])
def test_biases_are_put_back_when_correction_does_not_help(pt2e, monkeypatch, guard, reason) -> None:
    _, samples, fp32, converted = pt2e
    gm = copy.deepcopy(converted)
    before = _biases(gm)
    # No small model gets worse (or breaks) on demand, so the guard's answer is forced here; the guard itself
    # is tested below. Either way every bias must be as the quantizer left it, and the report must say why.
    monkeypatch.setattr(bc, "closer_to_fp32", guard)
    report = bc.correct_biases(gm, samples, fp32)
    assert report["applied"] is False and reason in report["reason"], report
    after = _biases(gm)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_model_without_convs_is_left_alone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model = loaded(mlp, (1, 8), "mlp")
    art = ExecuTorchExporter().export(model, "int8", calibration((1, 8), n=4, seed=0), tmp_path)
    report = art.details["quantizer"]["bias_correction"]
    assert report["applied"] is False and report["reason"] == "no biased Conv to correct", report
    assert report["layers"] == 0 and report["layers_left_out"] == 0


def test_the_guard_judges_direction_not_size() -> None:
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal(10)] for _ in range(8)]
    noisy = [[r[0] + 0.3 * rng.standard_normal(10)] for r in ref]
    smaller = [[0.8 * r[0]] for r in ref]  # same direction, 20% smaller: larger squared error, same ranking
    applied, n = closer_to_fp32(ref, noisy, smaller)
    assert applied is True and n["output_cosine_after"] == pytest.approx(1.0)
    assert n["output_scale_after"] == pytest.approx(0.8, abs=1e-4)
    applied, n = closer_to_fp32(ref, smaller, noisy)
    assert applied is False and n["output_mse_after"] > 0


def test_exporter_report_and_a_fully_delegated_pte(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = loaded(DWNet(), SHAPE, "dwnet", in_name="image")
    cal = calibration(SHAPE, n=16, seed=1)
    plain = ExecuTorchExporter(bias_correction=False).export(model, "int8", cal, tmp_path / "plain")
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    fixed = ExecuTorchExporter().export(model, "int8", cal, tmp_path / "fixed")
    report = bias_reports(plain, fixed, layers=7, samples=16)
    # the correction edits the converted graph's own copies of the biases, never the user's parameters
    # (convert_pt2e shares the float bias tensors with the module; corrected in place, later exports changed)
    assert report["applied"] and all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
    # only bias values move: the lowered program has the same ops, all in XNNPACK
    assert fixed.op_summary == plain.op_summary and fixed.delegation == plain.delegation
    assert fixed.delegation["fraction"] == 1.0
    # the corrected biases reach the program (the logits of this tiny net sit on an int8 output grid coarser
    # than the shifts, so compare the programs' bytes, which hold the biases, not one output)
    assert (plain.path.read_bytes() != fixed.path.read_bytes()) is report["applied"]
    x = tuple(np.asarray(a) for a in cal.samples[0])
    assert ExecuTorchExporter().open(fixed.path).run(x)[0].shape == (1, 10)
    # dynamic int8 has no calibration to correct on, and says nothing about it
    dyn = ExecuTorchExporter().export(model, "int8-dynamic", None, tmp_path / "dyn")
    assert "bias_correction" not in dyn.details["quantizer"]
