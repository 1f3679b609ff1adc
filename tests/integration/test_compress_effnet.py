"""Structured pruning on the real EfficientNet-Lite0 (no fine-tuning): fewer parameters, still exportable."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_effnet_lite0_prune_30pct_keeps_head_and_exports() -> None:
    from packager.compress.structured import StructuredPruneConfig, prune_structured
    from packager.models import load_model

    m = load_model("efficientnet-lite0")
    ex = tuple(m.example_inputs)
    rep = prune_structured(m.module, ex, StructuredPruneConfig(ratio=0.3))
    assert rep.params_after <= 0.75 * rep.params_before
    assert rep.macs_after < rep.macs_before
    head = [r for r in rep.layers if r["layer"] in rep.ignored]
    assert head and head[0]["out_after"] == head[0]["out_before"] == 1000
    pruned = [r for r in rep.layers if r["out_after"] < r["out_before"]]
    assert pruned and all(r["out_after"] % 8 == 0 for r in pruned)
    with torch.no_grad():
        assert m.module(ex[0]).shape == (1, 1000)
    torch.export.export(m.module, ex)
