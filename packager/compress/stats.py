"""Per-column statistics of what each consumer layer reads: mean and variance, from data and from BatchNorm.

Two estimates of each column's variance, averaged when both exist (a 50/50 mixture of the two
distributions); the mean used for compensation is the data's whenever there is data:

* **data**: the calibration inputs run through the model; every spatial position of a conv's input is a
  sample. Honest, but a few photos are a narrow slice of what the model was trained on: a channel that is
  idle on them may be busy on other images.
* **BatchNorm prior**: a BatchNorm stores what it saw in training: in eval mode its output is
  ``(x - running_mean) / sqrt(running_var) * weight + bias``, which over the training data has mean ``bias``
  and standard deviation ``|weight|``. Replacing every BatchNorm's output by samples of
  ``N(bias, weight^2)`` and running the rest of the network (activations, depthwise convs, residual adds)
  gives the moments each consumer would see on training-like data, as far as a BatchNorm sees it
  (channels independent, positions independent). A channel that is dead over the training data (a ReLU6
  after a BatchNorm with ``bias`` far below zero) shows up as dead here without any image.

Also the scale of the BatchNorm that directly follows each consumer (``weight / sqrt(running_var + eps)``
per output), so a channel's importance is counted in the normalised units the rest of the network sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from packager.compress.groups import GroupGraph


@dataclass
class ChannelStats:
    """consumer -> per input column tensors. ``source``: "data", "batchnorm prior" or "data + batchnorm prior"."""

    mean: dict[str, torch.Tensor] = field(default_factory=dict)
    var: dict[str, torch.Tensor] = field(default_factory=dict)
    row_scale: dict[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    samples: int = 0


def _rows(a: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) -> (N * spatial, C); (N, F) stays."""
    if a.dim() <= 2:
        return a.reshape(-1, a.shape[-1])
    return a.movedim(1, -1).reshape(-1, a.shape[1])


def input_moments(
    model: torch.nn.Module, names: list[str], inputs: torch.Tensor, batch_size: int = 16
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(mean, var) per input column of each module in ``names`` over ``inputs`` (eval mode)."""
    import torch

    mods = dict(model.named_modules())
    acc: dict[str, list[Any]] = {}

    def grab(name: str):
        def f(_m: Any, inp: Any) -> None:
            x = _rows(inp[0].detach()).double()
            s = acc.setdefault(name, [0, 0, 0])
            s[0] = s[0] + x.sum(0)
            s[1] = s[1] + (x * x).sum(0)
            s[2] += len(x)

        return f

    hooks = [mods[n].register_forward_pre_hook(grab(n)) for n in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for i in range(0, int(inputs.shape[0]), batch_size):
                model(inputs[i : i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = {}
    for n, (s1, s2, cnt) in acc.items():
        mean = s1 / cnt
        out[n] = (mean, (s2 / cnt - mean * mean).clamp_min(0.0))
    return out


def has_batchnorm(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


def prior_moments(
    model: torch.nn.Module,
    names: list[str],
    example_inputs: tuple[torch.Tensor, ...],
    batch: int = 8,
    seed: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Moments under the BatchNorm prior: every BatchNorm outputs samples of N(bias, weight^2)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    hooks = []

    def sample(bn: Any, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (out.dim() - 2)
        mu = (bn.bias.detach() if bn.bias is not None else torch.zeros(out.shape[1])).reshape(shape)
        sd = (bn.weight.detach().abs() if bn.weight is not None else torch.ones(out.shape[1])).reshape(shape)
        return mu + sd * torch.randn(out.shape, generator=gen, dtype=out.dtype)

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            hooks.append(m.register_forward_hook(sample))
    try:
        x = torch.cat([example_inputs[0]] * batch) if example_inputs[0].shape[0] == 1 else example_inputs[0]
        return input_moments(model, names, torch.zeros_like(x), batch_size=len(x))
    finally:
        for h in hooks:
            h.remove()


def successor_norms(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict[str, str]:
    """Layer -> the BatchNorm that reads its output directly (by tensor identity in one forward pass)."""
    import torch

    from packager.compress.groups import prunable_types

    produced: dict[int, str] = {}
    succ: dict[str, str] = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, prunable_types()):
            hooks.append(m.register_forward_hook(lambda _m, _i, o, n=n: produced.__setitem__(id(o), n)))
        elif isinstance(m, torch.nn.modules.batchnorm._BatchNorm):

            def pre(_m: Any, i: Any, n: str = n) -> None:
                src = produced.get(id(i[0]))
                if src is not None:
                    succ[src] = n

            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return succ


def channel_stats(
    model: torch.nn.Module,
    graph: GroupGraph,
    inputs: torch.Tensor | None,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    prior: bool = True,
) -> ChannelStats | None:
    """Statistics of every consumer's input columns; None when there is neither data nor a BatchNorm."""
    consumers = sorted({c for g in graph.groups for c in g.consumers})
    if not consumers:
        return ChannelStats(source="none")
    data = input_moments(model, consumers, inputs) if inputs is not None and len(inputs) else {}
    # only where the channels a consumer reads pass through a BatchNorm of their group is the prior meaningful
    normed = sorted({c for g in graph.groups if g.norms for c in g.consumers})
    pri = (
        prior_moments(model, normed, example_inputs)
        if prior and normed and has_batchnorm(model) and len(example_inputs) == 1
        else {}
    )
    if not data and not pri:
        return None
    st = ChannelStats(samples=len(inputs) if inputs is not None else 0)
    st.source = " + ".join(s for s, d in (("data", data), ("batchnorm prior", pri)) if d)
    for c in consumers:
        parts = [d[c] for d in (data, pri) if c in d]
        if not parts:
            continue
        mean = sum(p[0] for p in parts) / len(parts)
        # mixture: E[x^2] averaged, minus the mixture mean squared
        ex2 = sum(p[1] + p[0] ** 2 for p in parts) / len(parts)
        st.var[c] = (ex2 - mean**2).clamp_min(0.0)
        # the mean folded into biases is the data's when there is data: what the channel really outputs on
        # the inputs at hand (the prior is a guess, and a wrong constant is a bias error everywhere)
        st.mean[c] = data[c][0] if c in data else mean
    mods = dict(model.named_modules())
    for layer, bn_name in successor_norms(model, example_inputs).items():
        bn = mods[bn_name]
        if layer in st.mean and bn.running_var is not None:
            w = bn.weight.detach().double() if bn.weight is not None else 1.0
            st.row_scale[layer] = (w / (bn.running_var.detach().double() + bn.eps).sqrt()).abs()
    return st
