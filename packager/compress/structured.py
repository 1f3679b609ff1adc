"""Structured (channel) pruning over torch-pruning's dependency graph, with mpk choosing every channel.

Removing whole output channels makes every tensor downstream narrower, so the
model gets smaller *and* faster on any dense runtime, unlike unstructured zeros.
torch-pruning's ``DependencyGraph`` finds the coupled layers (see
:mod:`packager.compress.groups`); mpk scores the channels of each group, decides
how many each group keeps, removes exactly those (so it knows which original
channel every kept one is) and, where it knows the removed channels' mean input,
folds their mean contribution into the consumers' biases (*mean compensation*:
a channel that is nearly constant then costs nearly nothing).

How many channels each group keeps:

* ``ratio`` alone: that fraction of every group (``global: true``: ranked across
  groups instead, so unimportant groups lose more, capped at ``max_layer_ratio``),
* ``per_layer``: the ratio of the group a named layer produces,
* ``target: macs|params``: ``ratio`` is the fraction of the model's MACs (or
  parameters) to remove, and each group's share is allocated from its measured
  sensitivity (:mod:`packager.compress.allocate`).

Channel counts are rounded down to a multiple of ``round_to`` (8 by default)
because XNNPACK's and most NEON kernels work on 8- or 16-wide tiles: 29
channels cost as much as 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpk.errors import ModelError, UsageError
from packager.compress import check_layer_names, check_ratio
from packager.compress.groups import ChannelGroup, GroupGraph, kept_count

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from packager.compress.stats import ChannelStats

Importance = Literal["l1", "l2", "taylor", "energy"]
IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "energy")
Target = Literal["channels", "macs", "params"]
TARGETS: tuple[str, ...] = ("channels", "macs", "params")
DEFAULT_SENSITIVITY_RATIOS = (0.125, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class StructuredPruneConfig:
    """``ratio=0.3`` removes 30% of the output channels of every prunable group (rounded to ``round_to``).

    ``target="macs", ratio=0.15`` removes 15% of the model's MACs instead, split across groups by measured
    sensitivity. ``importance`` ranks channels inside a group: weight magnitude (``l1``, ``l2``), first-order
    Taylor (``taylor``, needs calibration batches) or ``energy``, the share of its consumers' output the
    channel carries (variance of its input times the consumer weights, from the calibration data and, when
    the model has BatchNorm, the statistics stored in it). ``ignore`` names layers whose output channels must
    stay (``None``: the last Linear, i.e. the classifier head, whose outputs are the classes).
    """

    ratio: float
    importance: Importance = "l1"
    global_: bool = False
    ignore: list[str] | None = None
    round_to: int | None = 8
    per_layer: dict[str, float] = field(default_factory=dict)
    #: a cap per group under global ranking, so no layer can be emptied
    max_layer_ratio: float = 0.9
    target: Target = "channels"
    #: with target macs/params: the ratios each group is measured at, alone
    sensitivity_ratios: tuple[float, ...] = DEFAULT_SENSITIVITY_RATIOS
    #: fold removed channels' mean input into the consumers' biases (needs calibration data or BatchNorm)
    compensate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio, "structured ratio"))
        from mpk.registry import suggest

        if self.importance not in IMPORTANCES:
            raise UsageError(suggest(str(self.importance), IMPORTANCES, "importance"))
        if self.target not in TARGETS:
            raise UsageError(suggest(str(self.target), TARGETS, "target"))
        if self.round_to is not None and (
            isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1
        ):
            raise UsageError(f"round_to must be a positive integer or null, got {self.round_to!r}")
        if not isinstance(self.per_layer, dict):
            raise UsageError(f"per_layer must be a mapping layer -> ratio, got {self.per_layer!r}")
        for k, v in self.per_layer.items():
            check_ratio(v, f"per_layer ratio of {k!r}")
        check_ratio(self.max_layer_ratio, "max_layer_ratio")
        ratios = tuple(self.sensitivity_ratios or ())
        if not ratios:
            raise UsageError("sensitivity_ratios: give at least one ratio")
        for r in ratios:
            if check_ratio(r, "sensitivity ratio") == 0:
                raise UsageError("sensitivity_ratios must be > 0 (0 is the unpruned model, always included)")
        object.__setattr__(self, "sensitivity_ratios", tuple(sorted({float(r) for r in ratios})))
        if self.target != "channels" and (self.global_ or self.per_layer):
            raise UsageError(
                f"target {self.target!r} allocates each group's ratio itself; it cannot be combined with "
                "global or per_layer"
            )
        if not isinstance(self.compensate, bool):
            raise UsageError(f"compensate must be true or false, got {self.compensate!r}")

    @property
    def allocated(self) -> bool:
        """True when each group's ratio comes from measured sensitivity (target macs or params)."""
        return self.target != "channels"


@dataclass
class StructuredReport:
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    #: [{"layer", "type", "out_before", "out_after"}] for every Conv/Linear
    layers: list[dict[str, Any]]
    ignored: list[str]
    config: dict[str, Any]
    #: [{"group", "channels", "kept", "ratio", "producers", "consumers"}] for every group
    groups: list[dict[str, Any]] = field(default_factory=list)
    #: the allocation (target macs/params): sensitivity table and predicted cost, see allocate.py
    plan: dict[str, Any] | None = None
    compensated: int = 0

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def mac_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_ratio": round(self.param_ratio, 4),
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "mac_ratio": round(self.mac_ratio, 4),
            "layers": self.layers,
            "ignored": self.ignored,
            "groups": self.groups,
            "compensated_consumers": self.compensated,
            "config": self.config,
        }
        if self.plan is not None:
            d["plan"] = self.plan
        return d


def _out_channels(m: torch.nn.Module) -> int:
    return int(getattr(m, "out_channels", None) or getattr(m, "out_features", 0))


def _layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    from packager.compress.groups import prunable_types

    return {n: m for n, m in model.named_modules() if isinstance(m, prunable_types())}


def default_ignore(model: torch.nn.Module) -> list[str]:
    """The classifier head: the last ``nn.Linear`` (its outputs are class scores; pruning them drops classes)."""
    import torch.nn as nn

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def check_structured(model: torch.nn.Module, cfg: StructuredPruneConfig) -> list[str]:
    """Refuse a config before any work: unknown layer names, or a layer that would lose every channel.

    Returns the resolved ignore list.
    """
    layers = _layers(model)
    ignore = default_ignore(model) if cfg.ignore is None else check_layer_names(cfg.ignore, layers)
    check_layer_names(list(cfg.per_layer), layers)
    if not cfg.global_ and not cfg.allocated:
        for name, m in layers.items():
            if name in ignore:
                continue
            r = cfg.per_layer.get(name, cfg.ratio)
            c = _out_channels(m)
            if r > 0 and c > 1 and _rounded(c, r, cfg.round_to) < 1:
                raise UsageError(
                    f"ratio {r} would remove every output channel of layer {name!r} "
                    f"({c} channels, round_to={cfg.round_to})",
                    hint=f"lower the ratio, set round_to smaller, or add {name!r} to ignore",
                )
    return ignore


def _rounded(channels: int, ratio: float, round_to: int | None) -> int:
    # n_pruned = int(C * ratio), then the *kept* count is rounded down (0 means the layer would be emptied)
    kept = channels - int(channels * ratio + 1e-9)  # a ratio written as (C - k) / C gives back k
    if round_to:
        kept -= kept % round_to
    return kept


# --- channel scores ---------------------------------------------------------------------------------------


def _producer_rows(mod: torch.nn.Module, p: float) -> torch.Tensor:
    w = mod.weight.detach().double()  # (out, ...) for Conv and Linear alike
    return w.reshape(w.shape[0], -1).abs().pow(p).sum(1).pow(1.0 / p)


def _is_linear(mod: torch.nn.Module) -> bool:
    import torch.nn as nn

    return isinstance(mod, nn.Linear)


def group_scores(
    model: torch.nn.Module,
    group: ChannelGroup,
    importance: str,
    stats: ChannelStats | None,
    grads: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One score per channel of ``group`` (higher = keep). See :class:`StructuredPruneConfig` for the kinds."""
    import torch

    mods = dict(model.named_modules())
    score = torch.zeros(group.channels, dtype=torch.float64)
    if importance in ("l1", "l2"):
        p = 1.0 if importance == "l1" else 2.0
        for name in group.producers:
            rows = _producer_rows(mods[name], p)
            if len(rows) == group.channels:
                score += rows / max(float(rows.mean()), 1e-30)  # each producer weighs the same, whatever its scale
        return score
    if importance == "taylor":
        if not grads:
            raise UsageError("importance 'taylor' needs calibration batches (it backpropagates through them)")
        for name in group.producers:
            w = mods[name].weight.detach().double()
            g = grads[name].double()
            rows = (w * g).reshape(w.shape[0], -1).sum(1).abs()
            if len(rows) == group.channels:
                score += rows / max(float(rows.mean()), 1e-30)
        return score
    if stats is None:
        raise UsageError("importance 'energy' needs calibration data or BatchNorm statistics")
    for cons in group.consumers:
        cols, chans = group.consumer_columns[cons]
        w = mods[cons].weight.detach().double()
        w = w.reshape(w.shape[0], w.shape[1], -1)  # (out, in, taps); a Linear has one tap
        scale = stats.row_scale.get(cons)
        if scale is not None:
            w = w * scale[:, None, None]
        per_col = (w**2).sum((0, 2))  # energy each input column sends to the (normalised) outputs
        var = stats.var[cons]
        for col, ch in zip(cols, chans, strict=True):
            score[ch] += float(per_col[col] * var[col])
    return score


def taylor_grads(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], labels: list[torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """d(loss)/d(weight) of every Conv/Linear for first-order Taylor importance (|w * grad| per channel).

    Without labels the loss is cross-entropy against the model's own top-1, so the score measures how much a
    channel supports the model's current answers.
    """
    import torch
    import torch.nn.functional as F

    model.zero_grad()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for i, b in enumerate(batches):
                out = model(*b)
                target = labels[i] if labels is not None else out.detach().argmax(dim=-1)
                F.cross_entropy(out, target).backward()
        return {n: m.weight.grad.detach().clone() for n, m in _layers(model).items() if m.weight.grad is not None}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


# --- how many channels each group keeps ---------------------------------------------------------------------


def resolve_kept(
    graph: GroupGraph,
    cfg: StructuredPruneConfig,
    scores: dict[str, torch.Tensor],
    ratios: dict[str, float] | None = None,
) -> dict[str, int]:
    """Kept channels per group. ``ratios`` (group -> ratio, from an allocation) wins over the config's."""
    kept: dict[str, int] = {}
    if ratios is not None:
        for g in graph.groups:
            kept[g.name] = kept_count(g.channels, ratios.get(g.name, 0.0), cfg.round_to)
        return kept
    per_group: dict[str, float] = {}
    for layer, r in cfg.per_layer.items():
        owner = graph.out_group.get(layer)
        if owner is None:
            raise UsageError(
                f"per_layer: {layer!r} produces no prunable channels (it is ignored, or its outputs are the "
                "model's outputs)"
            )
        if owner in per_group and per_group[owner] != r:
            raise UsageError(f"per_layer: layers of group {owner!r} are given different ratios; give one")
        per_group[owner] = r
    if cfg.global_ and cfg.ratio > 0:
        # rank every channel by its score relative to its group's mean, so groups of different scales compare
        pool = []
        for g in graph.groups:
            if g.name in per_group:
                continue
            s = scores[g.name]
            rel = s / max(float(s.mean()), 1e-30)
            pool.extend((float(v), g.name) for v in rel)
        n_drop = int(len(pool) * cfg.ratio)
        pool.sort()
        drops: dict[str, int] = {}
        for _, name in pool[:n_drop]:
            drops[name] = drops.get(name, 0) + 1
        for g in graph.groups:
            if g.name in per_group:
                continue
            r = min(drops.get(g.name, 0) / g.channels, cfg.max_layer_ratio)
            kept[g.name] = kept_count(g.channels, r, cfg.round_to)
    for g in graph.groups:
        if g.name in kept:
            continue
        r = per_group.get(g.name, cfg.ratio)
        kept[g.name] = g.channels if r == 0 else _kept_or_refuse(g, r, cfg.round_to)
    return kept


def _kept_or_refuse(g: ChannelGroup, r: float, round_to: int | None) -> int:
    k = _rounded(g.channels, r, round_to)
    if k < 1:
        raise UsageError(
            f"ratio {r} would remove every channel of group {g.name!r} ({g.channels} channels, round_to={round_to})",
            hint="lower the ratio or set round_to smaller",
        )
    return k


# --- the pruning itself -----------------------------------------------------------------------------------


def prune_groups(
    model: torch.nn.Module,
    graph: GroupGraph,
    kept: dict[str, int],
    scores: dict[str, torch.Tensor],
    dg: Any,
    *,
    stats: ChannelStats | None = None,
    tracker: Any = None,
) -> int:
    """Remove the lowest-scored channels of every group down to ``kept[group]``; returns how many consumers
    got mean compensation. ``tracker`` (recovery.Tracker) records the original index of every kept channel."""
    import torch

    mods = dict(model.named_modules())
    names = {m: n for n, m in mods.items()}
    compensated = 0
    for g in graph.groups:
        k = kept.get(g.name, g.channels)
        if k >= g.channels:
            continue
        order = torch.argsort(scores[g.name], stable=True)
        drop = sorted(int(i) for i in order[: g.channels - k])
        root = mods[g.name]
        pruner = dg.get_pruner_of_module(root)
        try:
            grp = dg.get_pruning_group(root, pruner.prune_out_channels, drop)
        except Exception as e:  # torch-pruning raises bare errors on graphs it cannot handle
            raise ModelError(f"structured pruning failed on group {g.name!r}: {type(e).__name__}: {e}") from e
        deltas: dict[str, torch.Tensor] = {}
        rows_gone: dict[str, list[int]] = {}
        for item in grp:
            mod = item.dep.target.module
            name = names.get(mod)
            if name is None:
                continue
            is_out = dg.is_out_channel_pruning_fn(item.dep.handler)
            if is_out:
                rows_gone[name] = list(item.idxs)
            if tracker is not None:
                size = _dim_size(mod, is_out)
                if size is not None:
                    tracker.record(name, "out" if is_out else "in", size, list(item.idxs))
            if (
                stats is not None
                and not is_out
                and name in g.consumers
                and name in stats.mean
                and getattr(mod, "groups", 1) == 1
            ):
                deltas[name] = _mean_delta(mod, list(item.idxs), stats.mean[name])
        try:
            grp.prune()
        except Exception as e:
            raise ModelError(f"structured pruning failed on group {g.name!r}: {type(e).__name__}: {e}") from e
        for name, delta in deltas.items():
            if name in rows_gone:  # a consumer whose own outputs are in the group (a residual branch)
                gone = set(rows_gone[name])
                delta = delta[[i for i in range(len(delta)) if i not in gone]]
            _add_bias(mods[name], delta)
            compensated += 1
    return compensated


def _dim_size(mod: torch.nn.Module, out: bool) -> int | None:
    if hasattr(mod, "running_mean") and mod.running_mean is not None:
        return int(mod.running_mean.shape[0])
    w = getattr(mod, "weight", None)
    if w is None:
        return None
    if _is_linear(mod):
        return int(w.shape[0] if out else w.shape[1])
    if out:
        return int(w.shape[0])
    return int(w.shape[1] * getattr(mod, "groups", 1))


def _mean_delta(mod: torch.nn.Module, cols: list[int], mean: torch.Tensor) -> torch.Tensor:
    """What the removed input columns contributed on average: W[:, cols] (summed over kernel taps) @ mean."""
    w = mod.weight.detach().double()
    w = w.reshape(w.shape[0], w.shape[1], -1).sum(-1)[:, cols]
    return (w @ mean[cols].double()).to(mod.weight.dtype)


def _add_bias(mod: torch.nn.Module, delta: torch.Tensor) -> None:
    import torch

    with torch.no_grad():
        if mod.bias is None:
            mod.bias = torch.nn.Parameter(delta.clone().contiguous())
        else:
            mod.bias.add_(delta)


def prune_structured(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    cfg: StructuredPruneConfig,
    *,
    calibration: list[tuple[torch.Tensor, ...]] | None = None,
    labels: list[torch.Tensor] | None = None,
    ratios: dict[str, float] | None = None,
    stats: ChannelStats | None = None,
    tracker: Any = None,
    graph: GroupGraph | None = None,
) -> StructuredReport:
    """Prune ``model`` in place (it keeps its class; parameters are replaced by narrower ones).

    ``calibration`` (a few input batches) drives Taylor importance and, with ``compensate``, the channel
    statistics when ``stats`` is not given. ``ratios`` (group -> ratio) is an allocation to apply as is.
    """
    import torch

    from packager.compress.groups import dependency_graph, find_groups
    from packager.compress.stats import channel_stats

    ignore = check_structured(model, cfg)
    layers = _layers(model)
    before = {n: _out_channels(m) for n, m in layers.items()}
    was_training = model.training
    model.eval()
    dg = dependency_graph(model, example_inputs)
    graph = graph if graph is not None else find_groups(model, example_inputs, ignore, dg=dg)
    macs0, params0 = graph.cost()
    nothing = cfg.ratio == 0 and not any(cfg.per_layer.values()) and not any((ratios or {}).values())
    if nothing:
        model.train(was_training)
        return _report(model, before, ignore, cfg, graph, {}, macs0, params0, macs0, params0, 0)
    needs_stats = cfg.importance == "energy" or cfg.compensate
    if stats is None and needs_stats:
        inputs = torch.cat([b[0] for b in calibration]) if calibration and len(calibration[0]) == 1 else None
        stats = channel_stats(model, graph, inputs, example_inputs)
    grads = taylor_grads(model, calibration or [], labels) if cfg.importance == "taylor" and calibration else None
    scores = {g.name: group_scores(model, g, cfg.importance, stats, grads) for g in graph.groups}
    kept = resolve_kept(graph, cfg, scores, ratios)
    try:
        compensated = prune_groups(
            model, graph, kept, scores, dg, stats=stats if cfg.compensate else None, tracker=tracker
        )
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    model.eval()
    empty = [n for n, m in _layers(model).items() if _out_channels(m) == 0]
    if empty:
        raise ModelError(f"pruning emptied layer(s) {', '.join(empty)}; lower the ratio")
    from packager.compress.groups import layer_costs

    after = layer_costs(model, example_inputs)
    macs1 = sum(c.macs for c in after.values())
    params1 = sum(p.numel() for p in model.parameters())
    # graph.cost() counts only Conv/Linear MACs; report the same kind of number before and after
    return _report(model, before, ignore, cfg, graph, kept, macs0, params0, macs1, params1, compensated)


def _report(
    model: torch.nn.Module,
    before: dict[str, int],
    ignore: list[str],
    cfg: StructuredPruneConfig,
    graph: GroupGraph,
    kept: dict[str, int],
    macs0: int,
    params0: int,
    macs1: int,
    params1: int,
    compensated: int,
) -> StructuredReport:
    rows = [
        {"layer": n, "type": type(m).__name__, "out_before": before.get(n, 0), "out_after": _out_channels(m)}
        for n, m in _layers(model).items()
    ]
    conf = {
        "ratio": cfg.ratio,
        "importance": cfg.importance,
        "global": cfg.global_,
        "round_to": cfg.round_to,
        "per_layer": dict(cfg.per_layer),
        "target": cfg.target,
        "compensate": cfg.compensate,
    }
    groups = []
    for g in graph.groups:
        k = kept.get(g.name, g.channels)
        groups.append({**g.to_dict(), "kept": k, "ratio": round(1 - k / g.channels, 4)})
    return StructuredReport(
        int(params0), int(params1), int(macs0), int(macs1), rows, list(ignore), conf, groups, None, compensated
    )
