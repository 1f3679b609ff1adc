"""Sensitivity-guided structured pruning on the real EfficientNet-Lite0 (no fine-tuning): the plan reaches its
MAC target, is recorded, the BatchNorm step is measured and guarded, and the result still exports."""

from __future__ import annotations

import dataclasses

import pytest
import torch


@pytest.mark.slow
def test_effnet_lite0_mac_target_plan_recovery_and_export() -> None:
    from packager.compress.recipe_io import apply_compression, parse_compression
    from packager.data import load_dataset
    from packager.models import load_model

    m = load_model("efficientnet-lite0")
    cal = load_dataset("builtin", m, count=32, purpose="calibration")
    guard = load_dataset("builtin", m, count=24, purpose="evaluation")
    cfg = parse_compression(
        {"structured": {"ratio": 0.05, "target": "macs", "importance": "energy", "sensitivity_ratios": [0.25, 0.5]}}
    )
    comp = apply_compression(m, cfg, cal, guard=dataclasses.replace(guard), progress=False)
    s = comp.report["structured"]
    assert s["plan"]["met"] and s["mac_ratio"] <= 0.95, s["plan"]
    assert len({r["group"] for r in comp.report["sensitivity_rows"]}) == 24  # 15 expansions, 7 stages, stem, head
    assert s["channel_stats"] == "data + batchnorm prior"
    head = [r for r in s["layers"] if r["layer"] in s["ignored"]]
    assert head and head[0]["out_after"] == head[0]["out_before"] == 1000
    pruned = [r for r in s["layers"] if r["out_after"] < r["out_before"]]
    assert pruned and all(r["out_after"] % 8 == 0 for r in pruned)
    bn = comp.report["recovery"]["batchnorm"]
    assert bn["before"] and bn["after"]  # measured either way; kept only when the guard agreed
    if not bn["applied"]:
        assert bn["after"]["top1_agreement"] < bn["before"]["top1_agreement"] or (
            bn["after"]["cosine"] < bn["before"]["cosine"]
        )
    module = comp.model.module
    with torch.no_grad():
        assert module(m.example_inputs[0]).shape == (1, 1000)
    torch.export.export(module, tuple(m.example_inputs))
