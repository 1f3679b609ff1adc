"""Channel groups: the units structured pruning removes, and what removing channels of each one costs and saves.

A *group* is a set of channels that must go together: a conv's output channels
are also its BatchNorm's channels, a depthwise conv's channels and the next
conv's input channels; a residual add ties the outputs of every block of a stage
into one group. torch-pruning's ``DependencyGraph`` finds them; this module turns
each into a :class:`ChannelGroup` with plain names:

* ``producers``: Conv/Linear layers whose *output* channels are removed,
* ``consumers``: Conv/Linear layers whose *input* channels are removed (they read the group),
* ``norms``: BatchNorm layers whose channels are removed,

and keeps, for every consumer, which of its input columns belongs to which group
channel (a Linear after a flatten reads each channel at several columns).

:func:`layer_costs` counts MACs and parameters per layer once, with a forward
pass; :meth:`GroupGraph.cost` predicts a plan's MACs and parameters from the
kept fraction of each group without pruning anything (exact for Conv and Linear,
which hold nearly all of a CNN's MACs). EfficientNet-Lite0 has 24 groups: one
per MBConv expansion (15), one per stage's residual stream (7), the stem, and the
head conv; the classifier's outputs are never a group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpk.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class ChannelGroup:
    """One prunable set of coupled channels. ``name`` is its root layer (the first producer found)."""

    name: str
    channels: int
    producers: list[str]
    consumers: list[str]
    norms: list[str]
    #: consumer name -> (input columns, group channel of each column), both in the original numbering
    consumer_columns: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.name,
            "channels": self.channels,
            "producers": list(self.producers),
            "consumers": list(self.consumers),
        }


@dataclass(frozen=True)
class LayerCost:
    """One Conv/Linear layer: its MACs and weight count for one batch-1 forward pass, and its channel counts."""

    name: str
    macs: int
    params: int
    in_channels: int
    out_channels: int
    depthwise: bool


@dataclass
class GroupGraph:
    """Every prunable group of a model plus the per-layer cost table used to predict a plan's MACs."""

    groups: list[ChannelGroup]
    layers: dict[str, LayerCost]
    #: layer name -> group name owning its output / input channels
    out_group: dict[str, str]
    in_group: dict[str, str]
    #: parameters outside Conv/Linear weights (BatchNorm, biases of unpruned layers...) are counted as they are
    total_params: int

    def by_name(self) -> dict[str, ChannelGroup]:
        return {g.name: g for g in self.groups}

    def cost(self, kept: dict[str, int] | None = None) -> tuple[int, int]:
        """Predicted (MACs, params) when group ``name`` keeps ``kept[name]`` channels (absent: all kept).

        A depthwise conv's input and output are the same group, so its cost scales once, not twice.

        >>> # a 1x1 conv 8 -> 16 on a 4x4 map: 2048 MACs; keeping 4 of its 8 input channels halves them
        """
        kept = kept or {}
        chans = {g.name: g.channels for g in self.groups}
        frac = {n: kept.get(n, c) / c for n, c in chans.items() if c}
        macs = 0.0
        params = 0.0
        weight_total = 0
        for name, lc in self.layers.items():
            fo = frac.get(self.out_group.get(name, ""), 1.0)
            fi = frac.get(self.in_group.get(name, ""), 1.0)
            f = fo if lc.depthwise else fo * fi
            macs += lc.macs * f
            params += lc.params * f
            weight_total += lc.params
        return round(macs), round(params + (self.total_params - weight_total))


def prunable_types() -> tuple[type, ...]:
    import torch.nn as nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_costs(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict[str, LayerCost]:
    """MACs and parameters of every Conv/Linear layer for one forward pass of ``example_inputs``."""
    import math

    import torch
    import torch.nn as nn

    costs: dict[str, LayerCost] = {}
    hooks = []

    def hook(name: str):
        def f(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            w = mod.weight
            params = w.numel() + (mod.bias.numel() if getattr(mod, "bias", None) is not None else 0)
            if isinstance(mod, nn.Linear):
                rows = out.numel() // out.shape[-1]
                macs = rows * w.numel()
                cin, cout, dw = mod.in_features, mod.out_features, False
            else:
                spatial = math.prod(out.shape[2:])
                macs = spatial * w.numel() * out.shape[0]
                cin, cout = mod.in_channels, mod.out_channels
                dw = mod.groups > 1 and mod.groups == cin
            costs[name] = LayerCost(name, int(macs), int(params), int(cin), int(cout), dw)

        return f

    for n, m in model.named_modules():
        if isinstance(m, prunable_types()):
            hooks.append(m.register_forward_hook(hook(n)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return costs


def dependency_graph(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Any:
    """torch-pruning's DependencyGraph; a graph it cannot trace is a ModelError with its reason."""
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs)
    except Exception as e:  # torch-pruning raises bare errors on graphs it cannot trace
        raise ModelError(f"structured pruning cannot trace this model: {type(e).__name__}: {e}") from e


def find_groups(
    model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], ignore: list[str], dg: Any = None
) -> GroupGraph:
    """Every group whose channels may be removed. A group containing an ``ignore`` layer's outputs is left out."""
    import torch.nn as nn

    dg = dg if dg is not None else dependency_graph(model, example_inputs)
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    ignored = [modules[n] for n in ignore]
    groups: list[ChannelGroup] = []
    out_group: dict[str, str] = {}
    in_group: dict[str, str] = {}
    for grp in dg.get_all_groups(ignored_layers=ignored, root_module_types=prunable_types()):
        root = names.get(grp[0].dep.target.module)
        if root is None:
            continue
        g = ChannelGroup(root, len(grp[0].idxs), [], [], [])
        for item in grp:
            dep, idxs = item.dep, item.idxs
            mod = dep.target.module
            name = names.get(mod)
            if name is None:
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                if isinstance(mod, prunable_types()):
                    if name not in g.producers:
                        g.producers.append(name)
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and name not in g.norms:
                    g.norms.append(name)
            elif dg.is_in_channel_pruning_fn(dep.handler) and isinstance(mod, prunable_types()):
                if getattr(mod, "groups", 1) > 1:
                    continue  # a depthwise conv reading the group is pruned with it, not a consumer
                if name not in g.consumers:
                    g.consumers.append(name)
                    g.consumer_columns[name] = (list(idxs), list(item.root_idxs))
        if not g.producers or g.channels < 2:
            continue
        for p in g.producers:
            out_group[p] = g.name
        for c in g.consumers:
            in_group[c] = g.name
        groups.append(g)
    costs = layer_costs(model, example_inputs)
    return GroupGraph(groups, costs, out_group, in_group, sum(p.numel() for p in model.parameters()))


def kept_count(channels: int, ratio: float, round_to: int | None) -> int:
    """Channels left when ``ratio`` of ``channels`` go, rounded down to ``round_to`` but never below it.

    >>> kept_count(96, 0.25, 8), kept_count(96, 0.3, 8), kept_count(12, 0.9, 8), kept_count(10, 0.5, None)
    (72, 64, 8, 5)
    """
    kept = channels - int(channels * ratio + 1e-9)  # a ratio written as (C - k) / C gives back k
    if round_to and round_to > 1:
        kept -= kept % round_to
        kept = max(kept, min(round_to, channels))
    return max(1, min(channels, kept))
