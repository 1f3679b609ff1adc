"""Compression inside `mpk package`: the pruned, distilled model goes through the same quantize, export and
verify path as any other, and the manifest records what was pruned. Real torch-pruning, real ExecuTorch and
ONNX Runtime, the real digits test split."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from mpk.cli import main
from mpk.contract import problems

RECIPE = {
    "model": "digits-cnn",
    "backends": ["executorch", "onnx"],
    "schemes": ["none", "int8"],
    "calibration_count": 64,
    "eval_count": 450,  # the whole digits test split: one image is 0.2 points, not 1
    "compression": {
        "structured": {"ratio": 0.5},
        # the whole train split (count: None -> all) as distillation data; labels are used where they exist
        "distill": {"epochs": 20, "optimizer": "adam", "lr": 0.003, "batch_size": 64, "augment": "none",
                    "samples": 1347},
    },
}  # fmt: skip


def test_pruned_distilled_int8_keeps_accuracy_with_half_the_parameters(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "pkg"
    r = CliRunner().invoke(main, ["package", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code in (0, 1), r.output
    man = json.loads((out / "manifest.json").read_text())
    assert problems(man, "manifest") == []
    comp = man["compression"]
    assert comp["structured"]["params_after"] < 0.5 * comp["structured"]["params_before"], comp["structured"]
    assert man["model"]["parameters"] == comp["structured"]["params_after"]
    arts = {a["id"]: a for a in man["artifacts"]}
    for backend in ("executorch", "onnx"):
        m = arts[f"{backend}-int8"]["verification"]["metrics"]
        # real test-split accuracy of the pruned int8 artifact vs the unpruned fp32 model
        assert m["accuracy"] >= m["fp32_accuracy"] - 0.01, (backend, m)


def test_misspelt_compression_key_is_refused_before_any_work(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "compression": {"structured": {"ratoi": 0.5}}}))
    r = CliRunner().invoke(main, ["package", "--recipe", str(recipe), "--out", str(tmp_path / "pkg")])
    assert r.exit_code == 2, r.output
    assert "compression.structured.ratoi" in r.output
    assert not (tmp_path / "pkg").exists()


def test_qat_section_yields_a_verified_int8_qat_artifact(tmp_path: Path) -> None:
    """A recipe's qat section must produce its artifact, not be accepted and ignored."""
    recipe = tmp_path / "recipe.yaml"
    spec = {k: v for k, v in RECIPE.items() if k != "compression"}
    spec.update(
        backends=["executorch"],
        schemes=["none"],
        eval_count=450,
        compression={"qat": {"epochs": 2, "optimizer": "adam", "lr": 0.0005, "batch_size": 64, "augment": "none"}},
    )
    recipe.write_text(yaml.safe_dump(spec))
    out = tmp_path / "pkg"
    r = CliRunner().invoke(main, ["package", "--recipe", str(recipe), "--out", str(out)])
    assert r.exit_code in (0, 1), r.output
    man = json.loads((out / "manifest.json").read_text())
    assert problems(man, "manifest") == []
    arts = {a["id"]: a for a in man["artifacts"]}
    qat = arts["executorch-int8-qat"]
    assert qat["delegation"]["fraction"] == 1.0, qat["delegation"]
    m = qat["verification"]["metrics"]
    assert m["accuracy"] >= m["fp32_accuracy"] - 0.015, m
    assert qat["size_bytes"] < 0.5 * arts["executorch-fp32"]["size_bytes"]
    assert man["compression"]["qat"]["epochs_run"] == 2
