"""Structured (channel) pruning with torch-pruning's dependency graph.

Removing whole output channels makes every tensor downstream narrower, so the
model gets smaller *and* faster on any dense runtime, unlike unstructured
zeros. torch-pruning's ``DependencyGraph`` finds the coupled layers (a conv's
output channels are the next BatchNorm's, depthwise conv's and conv's input
channels; residual adds tie branches together) so the result still runs.

Channel counts are rounded down to a multiple of ``round_to`` (8 by default)
because XNNPACK's and most NEON kernels work on 8- or 16-wide tiles: 29
channels cost as much as 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpk.errors import ModelError, UsageError
from packager.compress import check_layer_names, check_ratio

if TYPE_CHECKING:  # pragma: no cover
    import torch

Importance = Literal["l1", "l2", "taylor"]
IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor")


@dataclass(frozen=True)
class StructuredPruneConfig:
    """``ratio=0.3`` removes 30% of the output channels of every prunable layer (rounded to ``round_to``).

    ``global_=True`` ranks channels across layers instead, so unimportant layers
    lose more; ``per_layer`` overrides the ratio for named layers. ``ignore``
    names layers whose output channels must stay (``None``: the last Linear,
    i.e. the classifier head, whose outputs are the classes).
    """

    ratio: float
    importance: Importance = "l1"
    global_: bool = False
    ignore: list[str] | None = None
    round_to: int | None = 8
    per_layer: dict[str, float] = field(default_factory=dict)
    #: a cap per layer under global ranking, so no layer can be emptied
    max_layer_ratio: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", check_ratio(self.ratio, "structured ratio"))
        if self.importance not in IMPORTANCES:
            from mpk.registry import suggest

            raise UsageError(suggest(str(self.importance), IMPORTANCES, "importance"))
        if self.round_to is not None and (not isinstance(self.round_to, int) or self.round_to < 1):
            raise UsageError(f"round_to must be a positive integer or null, got {self.round_to!r}")
        for k, v in self.per_layer.items():
            check_ratio(v, f"per_layer ratio of {k!r}")
        check_ratio(self.max_layer_ratio, "max_layer_ratio")


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

    @property
    def param_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "param_ratio": round(self.param_ratio, 4),
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "mac_ratio": round(self.macs_after / self.macs_before, 4) if self.macs_before else 1.0,
            "layers": self.layers,
            "ignored": self.ignored,
            "config": self.config,
        }


def _out_channels(m: torch.nn.Module) -> int:
    return int(getattr(m, "out_channels", None) or getattr(m, "out_features", 0))


def _layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    import torch.nn as nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def default_ignore(model: torch.nn.Module) -> list[str]:
    """The classifier head: the last ``nn.Linear`` (its outputs are class scores; pruning them drops classes)."""
    import torch.nn as nn

    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _kept(channels: int, ratio: float, round_to: int | None) -> int:
    # mirrors torch-pruning: n_pruned = int(C * ratio), then the *kept* count is rounded down
    kept = channels - int(channels * ratio)
    if round_to:
        kept -= kept % round_to
    return kept


def check_structured(model: torch.nn.Module, cfg: StructuredPruneConfig) -> list[str]:
    """Refuse a config before any work: unknown layer names, or a layer that would lose every channel.

    Returns the resolved ignore list.
    """
    layers = _layers(model)
    ignore = default_ignore(model) if cfg.ignore is None else check_layer_names(cfg.ignore, layers)
    check_layer_names(list(cfg.per_layer), layers)
    if not cfg.global_:
        for name, m in layers.items():
            if name in ignore:
                continue
            r = cfg.per_layer.get(name, cfg.ratio)
            c = _out_channels(m)
            if r > 0 and c > 1 and _kept(c, r, cfg.round_to) < 1:
                raise UsageError(
                    f"ratio {r} would remove every output channel of layer {name!r} "
                    f"({c} channels, round_to={cfg.round_to})",
                    hint=f"lower the ratio, set round_to smaller, or add {name!r} to ignore",
                )
    return ignore


def _taylor_grads(
    model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], labels: list[torch.Tensor] | None
) -> None:
    """Accumulate d(loss)/d(weight) for first-order Taylor importance (|w * grad|).

    Without labels the loss is cross-entropy against the model's own top-1, so
    the score measures how much a channel supports the model's current answers.
    """
    import torch
    import torch.nn.functional as F

    model.zero_grad()
    with torch.enable_grad():
        for i, b in enumerate(batches):
            out = model(*b)
            target = labels[i] if labels is not None else out.detach().argmax(dim=-1)
            F.cross_entropy(out, target).backward()


def prune_structured(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    cfg: StructuredPruneConfig,
    *,
    calibration: list[tuple[torch.Tensor, ...]] | None = None,
    labels: list[torch.Tensor] | None = None,
) -> StructuredReport:
    """Prune ``model`` in place (it keeps its class; parameters are replaced by narrower ones).

    ``calibration`` (a few input batches) is required for ``importance="taylor"``.
    """
    import torch
    import torch_pruning as tp

    ignore = check_structured(model, cfg)
    layers = _layers(model)
    before = {n: _out_channels(m) for n, m in layers.items()}
    was_training = model.training
    model.eval()
    macs0, params0 = tp.utils.count_ops_and_params(model, example_inputs)
    if cfg.ratio == 0 and not any(cfg.per_layer.values()):
        return _report(model, example_inputs, before, ignore, cfg, macs0, params0, macs0, params0)

    imp = {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[cfg.importance]()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs,
            importance=imp,
            global_pruning=cfg.global_,
            pruning_ratio=cfg.ratio,
            pruning_ratio_dict={layers[n]: r for n, r in cfg.per_layer.items()} or None,
            max_pruning_ratio=cfg.max_layer_ratio if cfg.global_ else 1.0,
            ignored_layers=[layers[n] for n in ignore],
            round_to=cfg.round_to,
        )
        if cfg.importance == "taylor":
            if not calibration:
                raise UsageError("importance 'taylor' needs calibration batches (it backpropagates through them)")
            _taylor_grads(model, calibration, labels)
        pruner.step()
    except (UsageError, ModelError):
        raise
    except Exception as e:  # torch-pruning raises bare errors on graphs it cannot trace
        raise ModelError(f"structured pruning failed: {type(e).__name__}: {e}") from e
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    model.eval()
    with torch.no_grad():
        macs1, params1 = tp.utils.count_ops_and_params(model, example_inputs)
    empty = [n for n, m in _layers(model).items() if _out_channels(m) == 0]
    if empty:
        raise ModelError(f"pruning emptied layer(s) {', '.join(empty)}; lower the ratio")
    return _report(model, example_inputs, before, ignore, cfg, macs0, params0, macs1, params1)


def _report(model, example_inputs, before, ignore, cfg, macs0, params0, macs1, params1) -> StructuredReport:
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
    }
    return StructuredReport(int(params0), int(params1), int(macs0), int(macs1), rows, list(ignore), conf)
