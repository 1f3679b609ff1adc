"""`mpk package --prune 0.3 --quantize int8` on a user's own .py model, end to end through the CLI: real
structured pruning, real ExecuTorch and ONNX Runtime exports, verified against the unpruned fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mpk.cli import main
from mpk.contract import problems as schema_problems

MODEL = """
import numpy as np
import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, image):
        x = torch.relu(self.bn1(self.conv1(image)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def make():
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():
        # half of each layer carries nothing (zero weights, a BatchNorm shift below zero): l1 pruning at 0.3
        # keeps 8 of 16 channels and must find exactly these
        m.conv1.weight[8:] = 0
        m.bn1.bias[8:] = -0.5
        m.conv2.weight[8:] = 0
        m.conv2.bias[8:] = -1.0
        m.fc.weight.mul_(8.0)  # confident classes, so int8 rounding does not flip the top-1
    return m.eval(), (torch.zeros(1, 3, 16, 16),)


def data(n):
    return np.random.default_rng(0).uniform(-1, 1, (n or 64, 3, 16, 16)).astype(np.float32)


def evaluation(n):
    return np.random.default_rng(1).uniform(-1, 1, (n or 64, 3, 16, 16)).astype(np.float32)
"""


def test_prune_flag_on_a_user_py_model_packages_int8_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "tiny.py"
    model.write_text(MODEL)
    out = tmp_path / "pkg"
    args = [
        "package",
        "--model", f"{model}:make",
        "--calibration", f"{model}:data",
        "--evaluation", f"{model}:evaluation",
        "--calibration-count", "64",
        "--eval-count", "64",
        "--backends", "executorch,onnx",
        "--quantize", "none,int8",
        "--prune", "0.3",
        "--out", str(out),
    ]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    man = json.loads((out / "manifest.json").read_text())
    assert schema_problems(man, "manifest") == []
    s = man["compression"]["structured"]
    assert s["config"]["ratio"] == 0.3
    assert {g["kept"] for g in s["groups"]} == {8} and s["params_after"] < 0.5 * s["params_before"]
    assert man["model"]["parameters"] == s["params_after"]
    arts = {a["id"]: a for a in man["artifacts"]}
    assert set(arts) == {"executorch-fp32", "executorch-int8", "onnx-fp32", "onnx-int8"}
    for a in arts.values():
        assert a["verification"]["status"] == "passed", (a["id"], a["verification"])
    # exactly the idle channels went: the pruned fp32 artifact computes what the original does
    assert arts["executorch-fp32"]["verification"]["metrics"]["snr_db"] > 60
    assert "recovery" in man["compression"] and man["compression"]["recovery"]["batchnorm"]["mode"] == "auto"
