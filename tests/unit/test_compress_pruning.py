"""Pruning on tiny real models: exact sparsity, honest sizes, channel rounding, the head left alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from mpk.errors import UsageError
from packager.compress.structured import StructuredPruneConfig, prune_structured
from packager.compress.unstructured import UnstructuredPruneConfig, measure_sizes, prune_unstructured


class Net(nn.Module):
    """A conv/BN/residual/linear net: enough coupling for the dependency graph to matter."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.a = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 48, 3, padding=1)
        self.fc = nn.Linear(48, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.a(x)) + x  # residual: stem and a must keep the same channels
        x = torch.relu(self.b(x)).mean((2, 3))
        return self.head(torch.relu(self.fc(x)))


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


EX = (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)


def test_global_unstructured_hits_target_sparsity_and_compresses(net: Net) -> None:
    dense = measure_sizes(net)
    rep = prune_unstructured(net, UnstructuredPruneConfig(amount=0.5, scope="global"))
    assert rep.sparsity == pytest.approx(0.5, abs=0.01)
    assert {r["layer"] for r in rep.layers} == {"stem", "a", "b", "fc", "head"}
    # global ranking: layers differ, unlike local scope
    assert len({round(r["sparsity"], 2) for r in rep.layers}) > 1
    # permanent: no masks or *_orig parameters left for export to trip on
    assert not any(n.endswith("_orig") for n, _ in net.named_parameters())
    assert not any(n.endswith("_mask") for n, _ in net.named_buffers())
    pruned = measure_sizes(net)
    assert abs(pruned.dense_bytes - dense.dense_bytes) < 64  # dense storage does not shrink
    assert pruned.compressed_bytes < 0.8 * dense.compressed_bytes  # zeros compress


def test_local_unstructured_prunes_each_named_layer(net: Net) -> None:
    rep = prune_unstructured(net, UnstructuredPruneConfig(amount=0.25, scope="local", layers=["a", "b"]))
    assert [r["layer"] for r in rep.layers] == ["a", "b"]
    for r in rep.layers:
        assert r["sparsity"] == pytest.approx(0.25, abs=0.002)
    assert float((net.stem.weight == 0).float().mean()) == 0.0


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_structured_rounds_channels_and_ignores_head(net: Net, importance: str) -> None:
    calib = [(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    rep = prune_structured(net, EX, StructuredPruneConfig(ratio=0.5, importance=importance), calibration=calib)
    outs = {r["layer"]: r for r in rep.layers}
    assert rep.ignored == ["head"]
    assert outs["head"]["out_after"] == 10
    for name in ("stem", "a", "b", "fc"):
        assert outs[name]["out_after"] % 8 == 0 and outs[name]["out_after"] < outs[name]["out_before"]
    assert outs["stem"]["out_after"] == outs["a"]["out_after"]  # residual coupling respected
    assert rep.params_after < 0.5 * rep.params_before and rep.macs_after < rep.macs_before
    assert net(EX[0]).shape == (1, 10)
    torch.export.export(net, EX)  # still capturable for the export path


def test_structured_per_layer_and_global(net: Net) -> None:
    rep = prune_structured(net, EX, StructuredPruneConfig(ratio=0.0, per_layer={"b": 0.5}))
    outs = {r["layer"]: r["out_after"] for r in rep.layers}
    assert outs == {"stem": 32, "a": 32, "b": 24, "fc": 64, "head": 10}
    torch.manual_seed(0)
    g = Net().eval()
    rep = prune_structured(g, EX, StructuredPruneConfig(ratio=0.4, global_=True, round_to=None))
    assert 0.3 < 1 - rep.params_after / rep.params_before < 0.8
    assert all(r["out_after"] > 0 for r in rep.layers)


def test_taylor_needs_calibration(net: Net) -> None:
    with pytest.raises(UsageError, match="taylor"):
        prune_structured(net, EX, StructuredPruneConfig(ratio=0.25, importance="taylor"))
