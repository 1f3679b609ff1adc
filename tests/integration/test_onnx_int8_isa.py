"""int8 verification that does not depend on the packaging machine's CPU (issue #10).

Real ONNX Runtime sessions on two tiny int8 graphs whose exact result is 16.0 and which a saturating x86
kernel computes as ~8.06 (tests/integration/saturating_models.py explains the arithmetic). On every CPU the
reference evaluation must give 16.0; the host's own kernels must give 16.0 exactly when mpk says they do not
saturate, and ~8.06 when it says they do. The second test runs the same check as an AVX2-only CPU under
Debian's ``qemu-x86_64 -cpu Haswell`` (user-mode emulation: CPUID reports a Haswell, so ONNX Runtime picks its
AVX2 kernels), so an AVX-512 VNNI CI machine still exercises the saturating path.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpk.hostcpu import int8_kernel, this_cpu
from tests.integration import saturating_models as sm

ROOT = Path(__file__).resolve().parents[2]


def _check(result: dict) -> None:
    saturates = result["cpu"]["onnxruntime_int8_kernel"]["saturates"]
    for name in ("qdq_conv", "dynamic_matmul"):
        got = result[name]
        assert got["reference"] == pytest.approx(sm.EXACT, abs=1e-6), (name, got)
        expected_host = sm.SATURATED if saturates else sm.EXACT
        # the Q/DQ output grid (16/250) rounds the saturated value a little; the matmul has no output Q
        assert got["host"] == pytest.approx(expected_host, abs=0.04), (name, got, result["cpu"])


def test_reference_is_exact_and_the_host_kernel_matches_mpks_model_of_it() -> None:
    result = sm.evaluate()
    assert result["cpu"]["onnxruntime_int8_kernel"]["name"] == int8_kernel(this_cpu()).name
    _check(result)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 emulation of an x86-64 CPU")
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="Debian's qemu-user is not installed")
def test_an_avx2_only_cpu_saturates_and_the_reference_does_not() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-m", "tests.integration.saturating_models"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["cpu"]["onnxruntime_int8_kernel"]["name"] == "avx2", result["cpu"]
    assert "avx512f" not in result["cpu"]["features"]
    _check(result)  # host ~8.06, reference 16.0


def test_onnx_int8_verification_is_judged_on_the_reference(tmp_path: Path) -> None:
    """A real int8 export: verification says which evaluation it used and records the host kernel beside it."""
    from packager.export.onnx import OnnxExporter
    from packager.verify import tolerances_for, verify_artifact
    from tests.integration.export_models import calibration, conv_net

    model = conv_net()
    shape = tuple(model.inputs[0].shape)
    cal, ev = calibration(shape, n=16, seed=1), calibration(shape, n=8, seed=2)
    ex = OnnxExporter()
    art = ex.export(model, "int8", cal, tmp_path)
    import torch

    with torch.no_grad():
        ref = [np.stack([model.module(torch.from_numpy(s[0])).numpy() for s in ev.samples])]
    v = verify_artifact(ex, art, ev, ref, classifier=True, tolerances=tolerances_for("int8"))
    assert v["evaluation"] == "reference"
    assert set(v["host_kernel"]) == {"metrics", "missed", "cpu"}
    assert int8_kernel(this_cpu()).name in v["host_kernel"]["cpu"]
    assert 0.9 < v["metrics"]["cosine"] <= 1.0
    if not int8_kernel(this_cpu()).saturates:  # the host computes the same graph: the numbers agree
        assert v["host_kernel"]["metrics"]["cosine"] == pytest.approx(v["metrics"]["cosine"], abs=1e-4)
    fp32 = ex.export(model, "fp32", None, tmp_path / "fp32")
    v32 = verify_artifact(ex, fp32, ev, ref, classifier=True, tolerances=tolerances_for("fp32"))
    assert v32["evaluation"] == "host" and "host_kernel" not in v32  # a float model has no int8 kernel


def test_reduce_range_keeps_every_weight_pair_under_int16(tmp_path: Path) -> None:
    """``--onnx-reduce-range``: 7-bit weights, so 2 x 255 x |w| never exceeds 32767 on any x86 kernel."""
    import onnx
    from onnx import numpy_helper

    from mpk.errors import ConfigError
    from packager.export.onnx import OnnxExporter
    from packager.recipe import Recipe
    from tests.integration.export_models import calibration, conv_net

    model = conv_net()
    cal = calibration(tuple(model.inputs[0].shape), n=8, seed=1)
    weights = {}
    for reduce_range in (False, True):
        art = OnnxExporter(reduce_range=reduce_range).export(model, "int8", cal, tmp_path / str(reduce_range))
        q = art.details["quantizer"]
        assert (q["reduce_range"], q["saturation_safe"]) == (reduce_range, reduce_range)
        proto = onnx.load(str(art.path))
        int8 = [numpy_helper.to_array(i) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]
        weights[reduce_range] = max(int(abs(w.astype(int)).max()) for w in int8 if w.ndim >= 2)
    assert weights[False] == 127 and weights[True] <= 64, weights
    assert 2 * 255 * weights[True] <= 32767 < 2 * 255 * weights[False]
    assert Recipe(model="digits-cnn", onnx_reduce_range=True).onnx_reduce_range is True
    with pytest.raises(ConfigError, match="onnx_reduce_range: expected true or false"):
        Recipe(model="digits-cnn", onnx_reduce_range="yes")
