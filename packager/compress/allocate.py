"""Sensitivity-guided allocation: how much of each channel group to remove to reach a MAC or parameter target.

1. **Measure** (:func:`measure_sensitivity`): each group is pruned *alone* (same
   scoring and mean compensation as the real run) at a few ratios, and the
   pruned model's outputs are compared with the original's on the sensitivity
   inputs through :func:`packager.verify.compute_metrics`. Each row keeps SNR,
   cosine and top-1 agreement, and the *relative noise* ``10^(-SNR/10)``
   (error energy / signal energy).
2. **Allocate** (:func:`allocate`): relative noise of independent errors adds up,
   so the plan minimises the sum of the chosen rows' noise subject to the
   predicted saving reaching the target: a multiple-choice knapsack, solved
   exactly by dynamic programming over savings in steps of 0.1% of the model.
   Savings come from :meth:`GroupGraph.cost`, so coupled groups (a layer that
   loses input and output channels) are counted as they will be; the plan is
   re-solved with a higher internal target until the predicted cost of the
   whole plan meets the asked one.

Example: ``target="macs", amount=0.15`` on EfficientNet-Lite0 measures 24 groups
at 4 ratios (96 pruned copies) and returns per-group ratios whose predicted MACs
are at most 0.85x, with the predicted SNR of the whole plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mpk.errors import UsageError
from packager.compress.groups import GroupGraph, kept_count

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from packager.compress.stats import ChannelStats


@dataclass
class SensitivityRow:
    group: str
    #: the ratio asked for; ``kept`` is what rounding to ``round_to`` left
    ratio: float
    kept: int
    channels: int
    #: fraction of the model's MACs / parameters this cut saves
    mac_saving: float
    param_saving: float
    snr_db: float
    cosine: float
    top1_agreement: float | None
    #: 10^(-snr/10): error energy relative to the output's energy
    noise: float


@dataclass
class Plan:
    """Per-group ratios and what they are predicted to cost and save."""

    target: str
    amount: float
    ratios: dict[str, float]
    kept: dict[str, int]
    predicted_noise: float
    predicted_snr_db: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    met: bool
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mac_reduction(self) -> float:
        return 1 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def param_reduction(self) -> float:
        return 1 - self.params_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mac_reduction"] = round(self.mac_reduction, 4)
        d["param_reduction"] = round(self.param_reduction, 4)
        return d


def noise_of(snr_db: float) -> float:
    """Relative error energy for an SNR in dB: 20 dB -> 0.01, 30 dB -> 0.001."""
    return 10 ** (-snr_db / 10)


def measure_sensitivity(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    graph: GroupGraph,
    scores: dict[str, torch.Tensor],
    stats: ChannelStats | None,
    inputs: torch.Tensor,
    reference: np.ndarray,
    *,
    ratios: tuple[float, ...],
    round_to: int | None,
    compensate: bool = True,
    classifier: bool = True,
    deadline: float | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[SensitivityRow]:
    """Remove each group's lowest-scored channels alone, at each ratio, and compare with ``reference``.

    Removing a group's channels is simulated, exactly: every layer that reads the group (its consumers) sees
    the removed columns replaced by what pruning leaves there (their mean with compensation, else zero).
    Nothing else reads a group's channels (BatchNorms, activations, depthwise convs and residual adds inside
    a group act channel by channel), so the outputs are those of the pruned model, without copying the
    model or rebuilding the dependency graph for each of the ~100 cuts.

    ``reference``: the unpruned model's outputs on ``inputs`` (N, ...). Ratios that round to the same kept
    count are measured once. ``deadline`` (time.monotonic) stops early; groups not reached get no rows
    (the allocation then leaves them unpruned).
    """
    import torch

    from packager.verify import compute_metrics

    macs0, params0 = graph.cost()
    mods = dict(model.named_modules())
    todo = []
    for g in graph.groups:
        seen = set()
        for r in ratios:
            k = kept_count(g.channels, r, round_to)
            if k < g.channels and k not in seen:
                seen.add(k)
                todo.append((g, r, k))
    rows: list[SensitivityRow] = []
    model.eval()
    for i, (g, r, k) in enumerate(todo):
        if deadline is not None and time.monotonic() > deadline:
            break
        if progress is not None:
            progress(i, len(todo), f"{g.name} at {r:g}")
        drop = set(int(c) for c in torch.argsort(scores[g.name], stable=True)[: g.channels - k])
        hooks = []
        for cons in g.consumers:
            cols = [col for col, ch in zip(*g.consumer_columns[cons], strict=True) if ch in drop]
            fill = stats.mean[cons][cols].float() if compensate and stats is not None and cons in stats.mean else None
            dim = -1 if isinstance(mods[cons], torch.nn.Linear) else 1
            hooks.append(mods[cons].register_forward_pre_hook(_filler(cols, fill, dim)))
        try:
            out = run_batched(model, inputs)
        finally:
            for h in hooks:
                h.remove()
        met = compute_metrics([reference], [out], classifier=classifier)
        macs, params = graph.cost({g.name: k})
        snr = float(met["snr_db"] or 0.0)
        rows.append(
            SensitivityRow(
                group=g.name,
                ratio=r,
                kept=k,
                channels=g.channels,
                mac_saving=round(1 - macs / macs0, 6) if macs0 else 0.0,
                param_saving=round(1 - params / params0, 6) if params0 else 0.0,
                snr_db=round(snr, 3),
                cosine=round(float(met["cosine"] or 0.0), 6),
                top1_agreement=met["top1_agreement"],
                noise=noise_of(snr),
            )
        )
    if progress is not None:
        progress(len(todo), len(todo), "done")
    return rows


def _filler(cols: list[int], fill: torch.Tensor | None, dim: int) -> Callable[..., Any]:
    """A forward pre-hook replacing input columns ``cols`` along ``dim`` (1: conv channels; -1: Linear
    features) by ``fill`` (one value per column) or zero."""
    import torch

    index = torch.tensor(cols, dtype=torch.long)

    def hook(_m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].movedim(dim, -1).clone()
        value = fill.to(x.dtype) if fill is not None else torch.zeros(len(cols), dtype=x.dtype)
        x[..., index] = value
        return (x.movedim(-1, dim), *args[1:])

    return hook


def run_batched(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """The first output of ``model`` on ``inputs`` in batches, as one (N, ...) array."""
    import numpy as np
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, int(inputs.shape[0]), batch_size):
            y = model(inputs[i : i + batch_size])
            y = y[0] if isinstance(y, (tuple, list)) else y
            outs.append(y.detach().numpy())
    return np.concatenate(outs)


def allocate(
    graph: GroupGraph,
    rows: list[SensitivityRow],
    amount: float,
    *,
    target: str = "macs",
    round_to: int | None = 8,
    resolution: int = 1000,
) -> Plan:
    """The per-group ratios that remove at least ``amount`` of the target at the least summed noise.

    When even every measured cut together cannot reach ``amount``, the plan takes them all and ``met`` is
    False.
    """
    if target not in ("macs", "params"):
        raise UsageError(f"allocation target must be 'macs' or 'params', got {target!r}")
    macs0, params0 = graph.cost()
    by_group: dict[str, list[SensitivityRow]] = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    names = [g.name for g in graph.groups if g.name in by_group]
    channels = {g.name: g.channels for g in graph.groups}

    def predicted(choice: dict[str, SensitivityRow]) -> tuple[int, int]:
        return graph.cost({n: r.kept for n, r in choice.items()})

    def achieved(choice: dict[str, SensitivityRow]) -> float:
        macs, params = predicted(choice)
        return 1 - (macs / macs0 if target == "macs" else params / params0)

    goal = amount
    best: dict[str, SensitivityRow] = {}
    for _ in range(40):
        best = _knapsack(names, by_group, goal, target, resolution)
        if achieved(best) >= amount - 1e-9 or goal >= 1.0:
            break
        goal = min(1.0, goal + max(0.002, (amount - achieved(best)) * 0.5))
    if achieved(best) < amount - 1e-9:
        # even the last solve misses: take the lowest-noise row reaching furthest per group
        best = {n: max(by_group[n], key=lambda r: r.mac_saving if target == "macs" else r.param_saving) for n in names}
    macs, params = predicted(best)
    noise = sum(r.noise for r in best.values())
    ratios = {n: (channels[n] - best[n].kept) / channels[n] for n in best}  # exact: gives back kept
    kept = {n: best[n].kept for n in best}
    plan_rows = [
        {
            "group": n,
            "channels": channels[n],
            "kept": best[n].kept if n in best else channels[n],
            "ratio": ratios.get(n, 0.0),
            "measured_snr_db": best[n].snr_db if n in best else None,
        }
        for n in [g.name for g in graph.groups]
    ]
    return Plan(
        target=target,
        amount=amount,
        ratios=ratios,
        kept=kept,
        predicted_noise=noise,
        predicted_snr_db=round(-10 * math.log10(noise), 3) if noise > 0 else 200.0,
        macs_before=macs0,
        macs_after=macs,
        params_before=params0,
        params_after=params,
        met=achieved(best) >= amount - 1e-9,
        rows=plan_rows,
    )


def _knapsack(
    names: list[str], by_group: dict[str, list[SensitivityRow]], goal: float, target: str, resolution: int
) -> dict[str, SensitivityRow]:
    """Multiple-choice knapsack: at most one row per group, savings (in 1/resolution units) summing to at least
    ``goal``, least total noise. Savings are treated as additive here; the caller checks the real cost."""
    need = math.ceil(goal * resolution - 1e-9)
    if need <= 0:
        return {}
    inf = float("inf")
    # dp[j] = (least noise, choice) reaching at least j units (capped at need)
    dp: list[tuple[float, tuple[tuple[str, int], ...]]] = [(0.0, ())] + [(inf, ())] * need
    for n in names:
        opts = by_group[n]
        new = list(dp)
        for j in range(need + 1):
            base, choice = dp[j]
            if base == inf:
                continue
            for idx, r in enumerate(opts):
                save = r.mac_saving if target == "macs" else r.param_saving
                units = int(save * resolution)
                if units <= 0:
                    continue
                jj = min(need, j + units)
                cand = base + r.noise
                if cand < new[jj][0]:
                    new[jj] = (cand, (*choice, (n, idx)))
        dp = new
    noise, choice = dp[need]
    if noise == inf:
        # unreachable: the best partial is the largest j reached
        for j in range(need, -1, -1):
            if dp[j][0] < inf:
                noise, choice = dp[j]
                break
    return {n: by_group[n][i] for n, i in choice}


def limiting_groups(
    passing: Plan | None, failing: Plan, rows: list[SensitivityRow], top: int = 5
) -> list[dict[str, Any]]:
    """The groups that went further in ``failing`` than in ``passing``, most measured noise first: what had
    to be cut next, and broke the floor."""
    meas = {(r.group, r.kept): r for r in rows}
    before = passing.kept if passing is not None else {}
    out = []
    for name, k in failing.kept.items():
        k0 = before.get(name)
        if k0 is not None and k0 <= k:
            continue
        r = meas.get((name, k))
        out.append(
            {
                "group": name,
                "ratio_passing": passing.ratios.get(name, 0.0) if passing is not None else 0.0,
                "ratio_failing": failing.ratios.get(name, 0.0),
                "measured_snr_db": r.snr_db if r else None,
                "mac_saving": r.mac_saving if r else None,
            }
        )
    out.sort(key=lambda d: d["measured_snr_db"] if d["measured_snr_db"] is not None else 1e9)
    return out[:top]


def most_sensitive(rows: list[SensitivityRow], top: int = 5) -> list[dict[str, Any]]:
    """Groups whose smallest measured cut already costs the most (lowest SNR): the ones no plan can touch."""
    first: dict[str, SensitivityRow] = {}
    for r in rows:
        if r.group not in first or r.ratio < first[r.group].ratio:
            first[r.group] = r
    worst = sorted(first.values(), key=lambda r: r.snr_db)[:top]
    return [
        {"group": r.group, "ratio": r.ratio, "measured_snr_db": r.snr_db, "mac_saving": r.mac_saving} for r in worst
    ]


def format_sensitivity(rows: list[SensitivityRow]) -> str:
    """Group x ratio table; each cell: SNR dB, top-1 agreement, and the share of MACs the cut saves."""
    ratios = sorted({r.ratio for r in rows})
    by: dict[str, dict[float, SensitivityRow]] = {}
    for r in rows:
        by.setdefault(r.group, {})[r.ratio] = r
    head = f"{'group':<34} {'ch':>5} " + " ".join(f"{'cut ' + format(x, '.3g'):>20}" for x in ratios)
    lines = [head, "-" * len(head)]
    for g, cells in by.items():
        ch = next(iter(cells.values())).channels
        parts = []
        for x in ratios:
            c = cells.get(x)
            if c is None:
                parts.append(f"{'-':>20}")
                continue
            t = f"{c.top1_agreement:.2f}" if c.top1_agreement is not None else "-"
            parts.append(f"{c.snr_db:6.1f}dB {t:>4} {c.mac_saving * 100:4.1f}%".rjust(20))
        lines.append(f"{g:<34} {ch:>5} " + " ".join(parts))
    return "\n".join(lines)
