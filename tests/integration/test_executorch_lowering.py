"""ExecuTorch lowering: a recurrent model's time-step graph delegated to XNNPACK whole (int8 included), and int8
with a dynamic batch that runs any batch in range.

A GRU decomposed by torch.export splits its gate pre-activations with ``split_with_sizes_copy`` in every step, an op
ExecuTorch 1.4.1's XNNPACK partitioner does not take. Every split cut the delegate (a 128-step GRU: ~260
partitions), and at int8 the quantize/dequantize ops left between the pieces have no portable kernel: the program
did not serialise ("Missing out variants"). Real torch.export, PT2E, XNNPACK lowering and ExecuTorch runtime; nothing
is mocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mpk.errors import ExportError
from packager.export.executorch import ExecuTorchExporter
from tests.integration.export_models import ConvNet, calibration, cosine, loaded, torch_out

SHAPE = (1, 6, 4)  # batch, steps, features


class TinyGRU(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(4, 8, batch_first=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        return self.fc(h[:, -1])


@pytest.fixture(scope="module")
def gru():
    torch.manual_seed(0)
    return loaded(TinyGRU(), SHAPE, "gru")


@pytest.mark.parametrize("scheme", ["fp32", "int8"])
def test_a_gru_is_one_delegate_not_one_per_time_step(gru, scheme: str, tmp_path: Path) -> None:
    art = ExecuTorchExporter().export(gru, scheme, calibration(SHAPE, n=8), tmp_path)
    d = art.delegation
    # without the split -> slice rewrite: 8 partitions for these 6 steps (a 128-step GRU: ~260, past the bound)
    assert d["partitions"] <= 3, d
    assert "aten.split_with_sizes_copy" not in art.op_summary, art.op_summary
    assert not any(k.startswith("quantized_decomposed") for k in d["undelegated"]), d
    assert d["fraction"] > 0.95, d
    x = calibration(SHAPE, n=1, seed=7).samples[0]
    got = ExecuTorchExporter().open(art.path).run(x)[0]
    assert cosine(got, torch_out(gru, x[0])) > (0.9999 if scheme == "fp32" else 0.99)


def test_int8_left_outside_the_delegate_is_one_clear_error(gru, tmp_path: Path, monkeypatch) -> None:
    """Past the partition bound nothing is delegated; an int8 program then has quantize/dequantize ops that no
    portable kernel runs. That is an ExportError naming why, not to_executorch's "Missing out variants"."""
    import packager.export.executorch as et

    monkeypatch.setattr(et, "MAX_PARTITIONS", 0)
    with pytest.raises(ExportError) as info:
        ExecuTorchExporter().export(gru, "int8", calibration(SHAPE, n=8), tmp_path)
    msg = str(info.value)
    assert "quantize/dequantize ops were left outside" in msg and "XNNPACK partitions" in msg, msg
    assert "\n" not in msg and "Missing out variants" not in msg
    assert not list(tmp_path.glob("*.pte"))


_GROW = """
import sys, numpy as np
from packager.export.executorch import ExecuTorchSession
s = ExecuTorchSession(sys.argv[1])
for b in (1, 4, 2, 8):
    print(b, s.run((np.ones((b, 3, 32, 32), np.float32),))[0].shape, flush=True)
"""


def test_int8_with_a_dynamic_batch_runs_a_larger_batch_after_a_smaller_one(tmp_path: Path) -> None:
    """Batch 1 then 4 in a child process (a heap corruption kills the process; glibc's malloc checks, where
    installed, make it abort every time). Before the int8 ``mean`` was kept float: ``free(): invalid pointer``."""
    import os
    import subprocess
    import sys

    from packager.types import TensorSpec

    torch.manual_seed(0)
    model = loaded(ConvNet(), (2, 3, 32, 32), "convnet", in_name="image")  # conv -> conv -> mean -> linear
    model.inputs = [TensorSpec("image", ("batch", 3, 32, 32), dynamic={"batch": (1, 8)})]
    art = ExecuTorchExporter().export(model, "int8", calibration((2, 3, 32, 32), n=8), tmp_path)
    assert art.delegation["fraction"] > 0.8, art.delegation
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.check=3"}
    debug = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")
    if debug.exists():
        env["LD_PRELOAD"] = str(debug)
    run = subprocess.run([sys.executable, "-c", _GROW, str(art.path)], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert [ln.split()[0] for ln in run.stdout.splitlines()] == ["1", "4", "2", "8"], run.stdout
    x = calibration((4, 3, 32, 32), n=1, seed=3).samples[0]
    got = ExecuTorchExporter().open(art.path).run(x)[0]
    assert got.shape == (4, 10) and cosine(got, torch_out(model, x[0])) > 0.99
