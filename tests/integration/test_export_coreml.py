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
