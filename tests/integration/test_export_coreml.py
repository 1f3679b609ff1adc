"""CoreML exporter: real coremltools conversion and compression; the package spec read back on this host.

Core ML *prediction* needs macOS; on Linux the tests check structure only and that
opening a package says so (RuntimeMissing). The prediction test is marked ``macos``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mpk.errors import RuntimeMissing, UsageError
from packager.inspect_artifact import inspect_artifact
from packager.runtime import open_session
from packager.types import TensorSpec
from tests.integration.export_models import calibration, conv_net, mlp, torch_out

pytest.importorskip("coremltools")


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@pytest.fixture(scope="module")
def exporter():
    from packager.export import get_exporter

    return get_exporter("coreml")


@pytest.fixture(scope="module")
def mlp_artifacts(exporter, tmp_path_factory):
    model = mlp()
    out = tmp_path_factory.mktemp("coreml")
    return model, {s: exporter.export(model, s, None, out) for s in ("fp32", "fp16", "int8", "palettize4")}


def test_compressed_packages_are_smaller(mlp_artifacts) -> None:
    _, arts = mlp_artifacts
    sizes = {s: _size(a.path) for s, a in arts.items()}
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"]
    assert sizes["palettize4"] < sizes["int8"]
    assert arts["int8"].op_summary["constexpr_affine_dequantize"] == 1  # 64x128 weight; 128x10 is under threshold
    assert arts["palettize4"].op_summary["constexpr_lut_to_dense"] == 1
    assert arts["fp32"].details["minimum_deployment_target"] == "iOS16"


def test_structural_check_passes_and_catches_a_rename(mlp_artifacts) -> None:
    from packager.export.coreml import structural_check

    model, arts = mlp_artifacts
    for art in arts.values():  # fp16 compute keeps float32 IO
        ok = structural_check(art.path, model.inputs, model.outputs)
        assert ok["ok"], ok["problems"]
        assert ok["inputs"] == [{"name": "x", "shape": [1, 64], "dtype": "float32"}]
    bad = structural_check(arts["fp32"].path, [TensorSpec("image", (1, 64))], [TensorSpec("logits", (1, 12))])
    assert not bad["ok"]
    assert bad["problems"] == ["input 0: name 'x', expected 'image'", "output logits: shape [1, 10], expected [1, 12]"]


def test_conv_net_converts_with_spec_names(exporter, tmp_path: Path) -> None:
    model = conv_net()
    art = exporter.export(model, "fp32", None, tmp_path)
    info = inspect_artifact(art.path)
    assert info["model_type"] == "mlProgram" and info["specification_version"] >= 7
    assert [i["name"] for i in info["inputs"]] == ["image"]
    assert info["op_summary"]["conv"] == 2


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the package opens")
def test_open_off_macos_says_runtime_missing(mlp_artifacts) -> None:
    _, arts = mlp_artifacts
    with pytest.raises(RuntimeMissing, match="CoreML prediction needs macOS") as ei:
        open_session("coreml", arts["fp32"].path)
    assert ei.value.exit_code == 4


def test_not_a_package_is_a_clean_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mlpackage"
    fake.mkdir()
    with pytest.raises(UsageError, match="not a Core ML package"):
        inspect_artifact(fake)


@pytest.mark.macos
def test_prediction_close_to_torch_on_macos(mlp_artifacts) -> None:
    model, arts = mlp_artifacts
    x = calibration((1, 64), n=1, seed=2).samples[0][0]
    y = open_session("coreml", arts["fp32"].path).run((x,))[0]
    np.testing.assert_allclose(y, torch_out(model, x), atol=1e-3)


def _blob_offset(package: Path, data: np.ndarray) -> int:
    """Where ``data``'s bytes sit in the package's weight.bin (coremltools stores each blob contiguously)."""
    blob = (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").read_bytes()
    at = blob.find(np.ascontiguousarray(data).tobytes())
    assert at >= 0, "blob not found in weight.bin"
    return at


def _write(package: Path, offset: int, data: bytes) -> None:
    with open(package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin", "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_weight_check_reads_back_every_compressed_weight(mlp_artifacts) -> None:
    """The check runs on Linux (no Core ML runtime): each weight read back from the saved package."""
    _, arts = mlp_artifacts
    for scheme, art in arts.items():
        report = art.details["weight_check"]
        assert report["ok"], (scheme, report["problems"])
        # a.weight (128x64), a.bias (128), b.weight (10x128); b.bias has 10 values, under the 16 that make a weight
        assert report["layers"] == 3, report
    assert arts["fp32"].details["weight_check"]["worst_snr_db"] == 200.0  # stored exactly
    # int8 per-channel of a Gaussian 64x128 weight: ~40 dB; a 16-entry palette: ~20 dB (both under fp16's exact)
    assert 30 < arts["int8"].details["weight_check"]["worst_snr_db"] < 60
    assert 12 < arts["palettize4"].details["weight_check"]["worst_snr_db"] < 30


def test_weight_check_fails_on_a_corrupted_int8_weight(exporter, tmp_path: Path) -> None:
    import shutil

    from packager.export.coreml_weights import check_package, load_program, program_weights

    model = mlp()
    art = exporter.export(model, "int8", None, tmp_path / "a")
    fp32 = exporter.export(model, "fp32", None, tmp_path / "b")
    reference = program_weights(load_program(fp32.path))
    assert check_package(art.path, reference, "int8")["ok"]
    bad = tmp_path / "bad.mlpackage"
    shutil.copytree(art.path, bad)
    op = next(o for o in load_program(bad).functions["main"].operations if o.op_type == "constexpr_affine_dequantize")
    q = np.asarray(op.inputs["quantized_data"].val)
    # one output row of int8 data overwritten with the other extreme: a plausible-looking, wrong weight
    _write(bad, _blob_offset(bad, q), np.where(q[:1] >= 0, -127, 127).astype(np.int8).tobytes())
    report = check_package(bad, reference, "int8")
    assert not report["ok"]
    assert any("SNR" in p and "under the int8 floor" in p for p in report["problems"]), report["problems"]


def test_weight_check_fails_on_nan_and_on_an_unreadable_package(exporter, tmp_path: Path) -> None:
    from packager.export.coreml_weights import check_package, load_program, program_weights

    model = mlp()
    art = exporter.export(model, "fp32", None, tmp_path / "a")
    reference = program_weights(load_program(art.path))
    weight = next(v for k, v in reference.items() if k.endswith(".weight") and v.size == 64 * 128)
    _write(art.path, _blob_offset(art.path, weight.astype(np.float32)), np.float32([np.nan, np.inf]).tobytes())
    report = check_package(art.path, reference, "fp32")
    assert not report["ok"] and "2 NaN/inf value(s)" in report["problems"][0], report
    (art.path / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x00garbage")
    broken = check_package(art.path, reference, "fp32")
    assert not broken["ok"] and "cannot read the package's weights" in broken["problems"][0]


def test_zero_weight_channels_dequantize_to_zero_and_are_counted(exporter, tmp_path: Path) -> None:
    """A dead output channel gets scale 0 from coremltools' int8 quantizer (0/0 data); it must stay exactly 0."""
    import torch

    model = mlp()
    with torch.no_grad():
        next(model.module.parameters())[3].zero_()  # first Linear (64x128): output channel 3 all zero
    art = exporter.export(model, "int8", None, tmp_path)
    report = art.details["weight_check"]
    assert report["ok"], report["problems"]
    assert report["zero_scale_channels"] == 1


def test_int8_leaves_constants_added_to_activations_in_float(exporter, tmp_path: Path) -> None:
    """A BERT's position embeddings for a fixed sequence length are folded into a constant that an ``add`` reads
    (all-MiniLM-L6-v2: (1, 16, 384), max 1.87 against an rms of 0.037). int8 with one scale for the whole tensor
    (its channel axis has size 1) stored it at 18.8 dB, under the 25 dB floor; it is an activation, not a weight of
    a linear, and stays float (24 KB)."""
    import torch

    from tests.integration.export_models import loaded

    class Embedded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(0)
            pos = 0.03 * torch.randn(1, 32, 96, generator=g)  # over coremltools' 2048-element threshold
            pos[0, :, 7] = torch.linspace(-1.9, 1.9, 32)  # one outlier channel, as BERT's position embeddings have
            self.register_buffer("pos", pos)
            self.fc = torch.nn.Linear(96, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x + self.pos)

    art = exporter.export(loaded(Embedded(), (1, 32, 96), "embedded"), "int8", None, tmp_path)
    report = art.details["weight_check"]
    assert report["ok"], report["problems"]
    assert report["worst_snr_db"] > 30  # the linear's per-channel int8 weight; the added constant is exact
