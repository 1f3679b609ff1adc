"""Sensitivity-guided pruning and recovery on tiny real models: channel groups and their predicted cost,
mean compensation, BatchNorm re-estimation (relative form, guarded), the allocation, synthesis, augmentation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from mpk.errors import UsageError
from packager.compress.allocate import SensitivityRow, allocate, measure_sensitivity, run_batched
from packager.compress.groups import dependency_graph, find_groups, layer_costs
from packager.compress.recovery import RecoveryConfig, Tracker, bn_step, reestimate_bn
from packager.compress.stats import channel_stats
from packager.compress.structured import StructuredPruneConfig, group_scores, prune_groups, prune_structured
from packager.verify import compute_metrics


class BnNet(nn.Module):
    """conv-BN-ReLU6 twice, an expansion block with a 1x1 projection, a residual, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.expand = nn.Conv2d(16, 64, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.project = nn.Conv2d(64, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self.bn0(self.stem(x)))
        y = nn.functional.relu6(self.bn1(self.expand(x)))
        x = x + self.bn2(self.project(y))
        return self.head(x.mean((2, 3)))


def _bn_net(seed: int = 0) -> BnNet:
    torch.manual_seed(seed)
    net = BnNet()
    with torch.no_grad():  # trained-looking statistics: every BN with its own scale and shift
        for bn in (net.bn0, net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        # 16 expansion channels dead over the training data: BN shift far below zero, so ReLU6 gives 0
        net.bn1.bias[:16] = -20.0
    return net.eval()


X = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
EX = (X[:1],)


def test_groups_and_predicted_macs_match_the_pruned_model() -> None:
    net = _bn_net()
    g = find_groups(net, EX, ["head"])
    by = g.by_name()
    res = g.out_group["stem"]  # stem, project and the residual add are one group
    assert len(by) == 2 and g.out_group["project"] == res and g.out_group["expand"] == "expand"
    assert sorted(by[res].producers) == ["project", "stem"] and sorted(by[res].consumers) == ["expand", "head"]
    assert by["expand"].consumers == ["project"] and by["expand"].norms == ["bn1"]
    kept = {"expand": 32, res: 8}
    macs, _ = g.cost(kept)
    dg = dependency_graph(net, EX)
    scores = {n: torch.arange(c.channels, dtype=torch.float64) for n, c in by.items()}
    prune_groups(net, g, kept, scores, dg)
    assert sum(c.macs for c in layer_costs(net, EX).values()) == macs
    assert net.expand.out_channels == 32 and net.stem.out_channels == 8 and net.head.in_features == 8


def test_mean_compensation_makes_removing_dead_channels_free() -> None:
    """The 16 dead expansion channels output ReLU6(-20) = 0: energy ranks them last; with compensation the
    pruned model is the original (here exactly, since their constant is 0), and the prior alone finds them."""
    net = _bn_net()
    ref = run_batched(net, X)
    g = find_groups(net, EX, ["head"])
    st = channel_stats(net, g, None, EX)  # no data at all: the BatchNorm prior alone
    assert st is not None and st.source == "batchnorm prior"
    scores = group_scores(net, g.by_name()["expand"], "energy", st)
    assert set(torch.argsort(scores)[:16].tolist()) == set(range(16))
    pruned = copy.deepcopy(net)
    rep = prune_structured(
        pruned, EX, StructuredPruneConfig(ratio=0.0, per_layer={"expand": 0.25}, importance="energy"), stats=st
    )
    assert pruned.expand.out_channels == 48 and rep.compensated == 1
    torch.testing.assert_close(torch.from_numpy(run_batched(pruned, X)), torch.from_numpy(ref), atol=1e-5, rtol=1e-5)


def test_compensation_folds_a_constant_channel_into_the_bias() -> None:
    net = _bn_net()
    with torch.no_grad():
        net.bn1.bias[16:24] = 40.0  # saturated: ReLU6 gives a constant 6, which the projection must keep seeing
    ref = run_batched(net, X)
    cfg = StructuredPruneConfig(ratio=0.0, per_layer={"expand": 0.375}, importance="energy")
    on, off = copy.deepcopy(net), copy.deepcopy(net)
    prune_structured(on, EX, cfg, calibration=[(X,)])
    prune_structured(off, EX, StructuredPruneConfig(**{**cfg.__dict__, "compensate": False}), calibration=[(X,)])
    err_on = float(abs(torch.from_numpy(run_batched(on, X) - ref)).max())
    err_off = float(abs(torch.from_numpy(run_batched(off, X) - ref)).max())
    assert err_on < 1e-4 < err_off


def test_relative_bn_reestimation_leaves_the_unpruned_model_alone_absolute_does_not() -> None:
    """Data far from the training statistics: re-estimated from scratch, the statistics become the data's
    (what wrecks EfficientNet-Lite0 on 8 photos); relative to the original on the same data, nothing moves."""
    net = _bn_net()
    far = X * 5 + 3
    rel = copy.deepcopy(net)
    assert reestimate_bn(net, rel, Tracker(), far, mode="relative") == 3
    for a, b in zip(net.modules(), rel.modules(), strict=True):
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
    ab = copy.deepcopy(net)
    reestimate_bn(net, ab, Tracker(), far, mode="absolute")
    with torch.no_grad():
        y = net.stem(far)
    torch.testing.assert_close(ab.bn0.running_mean, y.mean((0, 2, 3)), atol=1e-4, rtol=1e-4)


def test_relative_bn_follows_the_shift_pruning_caused() -> None:
    net = _bn_net()
    pruned = copy.deepcopy(net)
    tr = Tracker()
    prune_structured(
        pruned, EX, StructuredPruneConfig(ratio=0.0, per_layer={"expand": 0.5}, compensate=False), tracker=tr
    )
    assert len(tr.kept_out["bn1"]) == 32 and len(tr.kept_in["project"]) == 32
    before = pruned.bn2.running_mean.clone()
    reestimate_bn(net, pruned, tr, X, mode="relative")
    with torch.no_grad():
        shift = (pruned.project(nn.functional.relu6(pruned.bn1(pruned.expand(nn.functional.relu6(pruned.bn0(
            pruned.stem(X))))))) - net.project(nn.functional.relu6(net.bn1(net.expand(nn.functional.relu6(net.bn0(
            net.stem(X)))))))).mean((0, 2, 3))  # fmt: skip
    torch.testing.assert_close(pruned.bn2.running_mean - before, shift, atol=1e-4, rtol=1e-3)


def test_bn_step_is_undone_when_the_guard_sees_it_hurt() -> None:
    net = _bn_net()
    pruned = copy.deepcopy(net)
    tr = Tracker()
    prune_structured(pruned, EX, StructuredPruneConfig(ratio=0.0, per_layer={"expand": 0.5}), tracker=tr)
    ref = run_batched(net, X)
    saved = pruned.bn2.running_mean.clone()
    # absolute statistics from data unlike the guard data: the guard must refuse them
    rep = bn_step(net, pruned, tr, X * 8 + 5, X, ref, RecoveryConfig(bn="absolute"), classifier=True)
    assert rep.before and rep.after and not rep.applied and "undone" in rep.reason
    torch.testing.assert_close(pruned.bn2.running_mean, saved)
    assert bn_step(net, pruned, tr, X, X, ref, RecoveryConfig(bn="off"), classifier=True).reason == "off"


def _row(group: str, ratio: float, kept: int, saving: float, snr: float) -> SensitivityRow:
    return SensitivityRow(group, ratio, kept, 64, saving, saving, snr, 0.99, 1.0, 10 ** (-snr / 10))


def test_allocation_takes_the_cheap_cuts_first_and_reports_a_miss() -> None:
    net = _bn_net()
    g = find_groups(net, EX, ["head"])
    macs0, _ = g.cost()
    rows = []
    for name, grp in g.by_name().items():
        for r in (0.25, 0.5):
            k = grp.channels - int(grp.channels * r)
            k -= k % 8
            saving = 1 - g.cost({name: k})[0] / macs0
            rows.append(_row(name, r, k, saving, 40.0 if name == "expand" else 10.0))
    need = min(r.mac_saving for r in rows if r.group == "expand") - 0.01
    plan = allocate(g, rows, need, target="macs")
    assert plan.met and plan.ratios == {"expand": 0.25}  # the insensitive group alone is enough
    assert 1 - plan.macs_after / plan.macs_before >= need
    assert plan.predicted_snr_db == pytest.approx(40.0)
    assert not allocate(g, rows, 0.95, target="macs").met


def test_measured_allocation_reaches_the_mac_target_end_to_end() -> None:
    from packager.compress.recipe_io import apply_compression, parse_compression
    from packager.models.loaders import finish_model
    from packager.types import Dataset

    net = _bn_net()
    lm = finish_model("bn-net", net, EX, {"kind": "test", "spec": "bn-net"}, input_names=["x"])
    data = Dataset([(X[i : i + 1].numpy(),) for i in range(len(X))], "test")
    cfg = parse_compression({"structured": {"ratio": 0.2, "target": "macs", "importance": "energy"}})
    comp = apply_compression(lm, cfg, data, progress=False)
    s = comp.report["structured"]
    assert s["mac_ratio"] <= 0.8 and s["plan"]["met"]
    assert {r["group"] for r in comp.report["sensitivity_rows"]} == {"expand", "project"}
    assert comp.report["recovery"]["batchnorm"]["before"]  # measured, then kept or undone: both reported


def test_sensitivity_rows_measure_each_group_alone() -> None:
    net = _bn_net()
    g = find_groups(net, EX, ["head"])
    st = channel_stats(net, g, X, EX)
    scores = {x.name: group_scores(net, x, "energy", st) for x in g.groups}
    ref = run_batched(net, X)
    rows = measure_sensitivity(net, EX, g, scores, st, X, ref, ratios=(0.25, 0.5), round_to=8)
    by = {(r.group, r.ratio): r for r in rows}
    assert by[("expand", 0.25)].snr_db > 60  # dead channels: free
    assert by[("expand", 0.5)].snr_db < by[("expand", 0.25)].snr_db
    assert net.expand.out_channels == 64  # the model itself is untouched
    # the simulated cut (consumer inputs replaced) is the real pruned model's output, number for number
    res = g.out_group["stem"]
    for group, layer, kept in (("expand", "expand", 32), (res, "stem", 8)):
        real = copy.deepcopy(net)
        prune_structured(
            real, EX, StructuredPruneConfig(ratio=0.0, per_layer={layer: 0.5}, importance="energy"), stats=st
        )
        m = compute_metrics([ref], [run_batched(real, X)], classifier=True)
        [row] = [r for r in rows if r.group == group and r.kept == kept]
        assert m["snr_db"] == pytest.approx(row.snr_db, abs=0.01), group


def test_synthesis_matches_batchnorm_statistics_and_is_seeded() -> None:
    from packager.compress.synthesize import SynthesisConfig, synthesize

    net = _bn_net()
    # statistics a real input distribution produces (shifted, scaled), far from the noise synthesis starts at
    reestimate_bn(net, net, Tracker(), X * 2 + 1, mode="absolute")
    cfg = SynthesisConfig(count=8, steps=30, batch_size=8, max_seconds=60, seed=3)
    x, rep = synthesize(net, (1, 3, 8, 8), cfg)
    assert x.shape == (8, 3, 8, 8) and rep.steps_run == 30 and rep.batchnorms == 3
    assert rep.loss_last[0] < 0.5 * rep.loss_first[0]
    y, _ = synthesize(net, (1, 3, 8, 8), cfg)
    torch.testing.assert_close(x, y)
    with pytest.raises(UsageError, match="needs BatchNorm"):
        synthesize(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 3, 8, 8), cfg)


def test_strong_augmentation_changes_views_keeps_shape_and_is_seeded() -> None:
    from packager.compress.distill import augment_batch

    a = augment_batch(X, torch.Generator().manual_seed(0), "strong")
    b = augment_batch(X, torch.Generator().manual_seed(0), "strong")
    assert a.shape == X.shape and torch.equal(a, b)
    assert float((a - X).abs().mean()) > 0.1
