"""Packaging models mpk was not developed on (issue 14), end to end through ``package()`` with real runtimes.

Tiny hand-written models (seconds each); the transformers corpus runs in tests/conformance. Nothing is mocked; two
tests lower a module constant (the partition bound) or the step limit so that the behaviour shows on a small model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mpk.contract import problems as schema_problems
from packager.pipeline import package
from packager.recipe import Recipe

MODELS = '''
import torch
from torch import nn


class TinyText(nn.Module):
    """Token ids + attention mask -> one attention block -> 4 classes (position ids by arange: index arithmetic)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tok = nn.Embedding(100, 32)
        self.pos = nn.Embedding(16, 32)
        self.qkv = nn.Linear(32, 96)
        self.proj = nn.Linear(32, 32)
        self.ln = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]) + 0
        h = self.tok(input_ids) + self.pos(positions)[None]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        bias = (1.0 - attention_mask[:, None, :].float()) * -1e9
        a = torch.softmax(q @ k.transpose(1, 2) / 32**0.5 + bias, dim=-1) @ v
        h = self.ln(h + self.proj(a))
        return self.head(h.mean(dim=1))


def text():
    return TinyText(), (torch.zeros(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))


class Outlier(nn.Module):
    """One input feature 1000x the others: its layer's int8 input grid has no room left for the rest."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(32, 64)
        self.b = nn.Linear(64, 64)
        self.c = nn.Linear(64, 8)
        with torch.no_grad():
            self.a.weight[:, 0] *= 1e-3

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def outlier():
    return Outlier(), (torch.zeros(1, 32),)


class GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h, _ = self.gru(x)
        return self.fc(h[:, -1])


def gru():
    return GRUNet(), (torch.zeros(1, 6, 4),)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("unseen")
    (folder / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    for name, n, seed in (("cal", 24, 1), ("ev", 24, 2)):
        r = np.random.default_rng(seed)
        mask = np.ones((n, 1, 16), np.int64)
        mask[1::2, :, 12:] = 0
        np.savez(folder / f"text_{name}.npz", input_ids=r.integers(1, 100, (n, 1, 16)), attention_mask=mask)
        x = r.standard_normal((n, 1, 32)).astype(np.float32)
        x[:, :, 0] *= 1000.0
        np.savez(folder / f"outlier_{name}.npz", x=x)
        np.savez(folder / f"gru_{name}.npz", x=r.standard_normal((n, 1, 6, 4)).astype(np.float32))
    del rng
    return folder


def _recipe(models: Path, tmp_path: Path, name: str, **kw) -> Recipe:
    base = dict(
        model=f"{models / 'models.py'}:{name}",
        backends=("executorch", "onnx"),
        schemes=("none", "int8"),
        calibration=str(models / f"{name}_cal.npz"),
        evaluation=str(models / f"{name}_ev.npz"),
        out=str(tmp_path / "pkg"),
        cache=False,
    )
    return Recipe(**{**base, **kw})


def test_token_model_quantizes_to_int8_on_both_backends(models: Path, tmp_path: Path) -> None:
    """int64 ids and mask stay int64 (ONNX calibration feeds, PT2E's arange + 0), int8 keeps attention accurate."""
    res = package(_recipe(models, tmp_path, "text"))
    m = res.manifest
    assert [(i["name"], i["dtype"]) for i in m["inputs"]] == [("input_ids", "int64"), ("attention_mask", "int64")]
    assert m["failures"] == []
    arts = {a["id"]: a for a in m["artifacts"]}
    for art_id in ("executorch-int8", "onnx-int8"):
        a = arts[art_id]
        assert a["verification"]["status"] == "passed", (art_id, a["verification"]["reason"])
        assert a["details"]["quantizer"]["policy"] == "linear"
        worst = a["details"]["layer_errors"]["worst"]
        assert worst and all({"module", "source", "snr_db", "loss_db"} <= set(r) for r in worst)
        quantized = [r for r in worst if r["quantized"]]
        assert quantized and all(r["module"] in ("qkv", "proj", "head") for r in quantized), [
            (art_id, r["name"], r["module"]) for r in quantized
        ]
    assert m["model"]["task"] == "classification"
    assert arts["executorch-int8"]["verification"]["metrics"]["top1_counted"] is not None
    assert schema_problems(json.loads((res.out / "manifest.json").read_text()), "manifest") == []


def test_float_fallback_keeps_the_guilty_layer_float_and_reports_the_cost(models: Path, tmp_path: Path) -> None:
    plain = package(_recipe(models, tmp_path / "a", "outlier", backends=("onnx", "executorch"), schemes=("int8",)))
    missed = {a["id"]: a for a in plain.manifest["artifacts"]}
    assert all(a["verification"]["status"] == "failed" for a in missed.values()), "the outlier model must miss int8"
    for a in missed.values():
        assert a["details"]["layer_errors"]["worst"][0]["module"] == "a", a["details"]["layer_errors"]["worst"][:2]
    fixed = package(
        _recipe(models, tmp_path / "b", "outlier", backends=("onnx", "executorch"), schemes=("int8",),
                float_fallback="auto")
    )  # fmt: skip
    for a in fixed.manifest["artifacts"]:
        fb = a["details"]["float_fallback"]
        assert a["verification"]["status"] == "passed", (a["id"], a["verification"]["reason"], fb)
        assert fb["met_tolerance"] and fb["layers"] and fb["layers"][0]["module"] == "a"
        assert fb["size_cost_bytes"] > 0
        assert a["size_bytes"] > missed[a["id"]]["size_bytes"]


def test_many_xnnpack_partitions_are_not_lowered_one_by_one(models: Path, tmp_path: Path, monkeypatch) -> None:
    """A recurrent graph splitting into more partitions than the bound is left on portable kernels, says why, and
    still verifies (the bound is lowered here so a 6-step GRU shows it; a 128-step one has ~600 partitions)."""
    import packager.export.executorch as et

    monkeypatch.setattr(et, "MAX_PARTITIONS", 2)
    res = package(_recipe(models, tmp_path, "gru", backends=("executorch",), schemes=("none",)))
    (a,) = res.manifest["artifacts"]
    assert a["verification"]["status"] == "passed"
    d = a["delegation"]
    assert d["delegated_ops"] == 0 and "XNNPACK partitions" in d["not_delegated_because"]


def test_a_step_past_its_limit_is_reported_and_the_rest_is_written(models: Path, tmp_path: Path) -> None:
    from packager.export.onnx import OnnxExporter

    class Stuck(OnnxExporter):
        def export(self, *a, **k):  # a lowering that makes no progress
            while True:
                torch.zeros(1)

    # the limit bounds every step, the ExecuTorch export and verification beside it too: 30 s leaves them room on a
    # busy 2-core CI machine (2 s failed there), and is still what ends the stuck one
    res = package(_recipe(models, tmp_path, "outlier", schemes=("none",), step_timeout=30), exporters={"onnx": Stuck()})
    (f,) = res.failures
    assert f["backend"] == "onnx" and "did not finish within 30 s" in f["error"], res.failures
    assert [a["id"] for a in res.manifest["artifacts"]] == ["executorch-fp32"]
