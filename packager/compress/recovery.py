"""Recovery right after structured pruning, before any training: reconstruction and BatchNorm re-estimation.

**Reconstruction** (least squares, in the spirit of ThiNet / channel pruning by
feature reconstruction). Removing channels of a group takes columns out of every
layer that reads it (its *consumers*). For a consumer that is a Linear or a 1x1,
ungrouped conv, its output is a linear function of its input, so the remaining
columns and a bias can be refitted to reproduce the *original* model's output:

    min over W', b'  E || W x_orig + b  -  (W' x_kept + b') ||^2

where x_kept is what the consumer sees in the pruned model. The expectation only
needs second moments of the inputs (``E[z z^T]`` and ``E[z x_orig^T]``,
z = [x_kept, 1]), gathered in one pass over calibration inputs. A little ridge
(``ridge`` x the mean diagonal) keeps it well posed when channels are collinear.
Other consumers (kxk convs) get mean compensation: the removed channels' mean
contribution is folded into the bias. Without a consumer refit, pruning an
EfficientNet-Lite0 expansion group by 25% takes logit SNR to a few dB; with it,
tens of dB (see bench/compression.py).

**BatchNorm re-estimation, relative form.** Re-estimating running statistics
from scratch on a few photos replaces ImageNet's statistics with those of the
photos: on EfficientNet-Lite0 that alone takes the *unpruned* model to 0.10
top-1 agreement. Here the statistics are corrected by what pruning changed, as
measured on the same inputs through both models:

    mean' = mean + (E_pruned[x] - E_orig[x]),   var' = var * Var_pruned[x] / Var_orig[x]

so the unpruned model is left exactly as it is, and the data only has to tell
how pruning moved each channel, not what ImageNet looks like. ``blend`` in
(0, 1] moves only part of the way. Only BatchNorms whose input changed are
touched. The step is guarded: it is kept only if it does not lower agreement (and
cosine) with the original model on the guard inputs; the report says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpk.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

BnMode = Literal["off", "relative", "absolute", "auto"]
BN_MODES: tuple[str, ...] = ("off", "relative", "absolute", "auto")


@dataclass(frozen=True)
class RecoveryConfig:
    """What runs right after structured pruning, before any training.

    ``refit``: least-squares refit of the consumers that allow it (off by default: with a few photos it fits
    them and not much else; on EfficientNet-Lite0 it raised agreement on the fitting views and lowered it on
    held-out ones). ``bn``: BatchNorm re-estimation: ``auto`` (relative form, kept only if the guard agrees),
    ``relative``, ``absolute`` (statistics from the data alone, as in most papers: only with data like the
    training data; still guarded) or ``off``.
    """

    refit: bool = False
    ridge: float = 1e-3
    bn: BnMode = "auto"
    #: fraction of the way from the original to the re-estimated statistics
    bn_blend: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.bn not in BN_MODES:
            from mpk.registry import suggest

            problems.append(suggest(str(self.bn), BN_MODES, "bn mode"))
        if not isinstance(self.refit, bool):
            problems.append(f"refit must be true or false, got {self.refit!r}")
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float)) or self.ridge < 0:
            problems.append(f"ridge must be a number >= 0, got {self.ridge!r}")
        if isinstance(self.bn_blend, bool) or not isinstance(self.bn_blend, (int, float)) or not 0 < self.bn_blend <= 1:
            problems.append(f"bn_blend must be in (0, 1], got {self.bn_blend!r}")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class BnReport:
    """The BatchNorm step as the manifest records it: agreement with the original before and after."""

    mode: str
    applied: bool
    layers: int = 0
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tracker:
    """Which original channels each layer kept, per dimension, so statistics of the original model can be
    matched with the pruned one (``kept_out[name]`` / ``kept_in[name]``: original indices, in order)."""

    def __init__(self) -> None:
        self.kept_out: dict[str, list[int]] = {}
        self.kept_in: dict[str, list[int]] = {}

    def record(self, name: str, dim: str, size: int, dropped: list[int]) -> None:
        table = self.kept_out if dim == "out" else self.kept_in
        current = table.get(name, list(range(size)))
        gone = set(dropped)
        table[name] = [c for i, c in enumerate(current) if i not in gone]

    def to_dict(self) -> dict[str, Any]:
        return {"kept_out": self.kept_out, "kept_in": self.kept_in}


def _as_rows(a: torch.Tensor, mod: torch.nn.Module) -> torch.Tensor:
    """A consumer's input as (samples, features): every spatial position of a 1x1 conv is a sample."""
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        return a.reshape(-1, a.shape[-1])
    return a.movedim(1, -1).reshape(-1, a.shape[1])


def refittable(mod: torch.nn.Module) -> bool:
    """Linear, or an ungrouped conv whose kernel is 1 everywhere and takes no padding (so its output is
    a per-position linear map of its input)."""
    import torch.nn as nn

    if isinstance(mod, nn.Linear):
        return True
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        pad = mod.padding if isinstance(mod.padding, tuple) else ()
        return (
            mod.groups == 1
            and all(k == 1 for k in mod.kernel_size)
            and all(s == 1 for s in mod.stride)
            and all(p == 0 for p in pad)
        )
    return False


def consumer_moments(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    names: list[str],
    inputs: torch.Tensor,
    batch_size: int = 16,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    """For each consumer: (E[z z^T], E[z x^T], n) with z = [pruned input, 1] and x = original input.

    Both models see the same batches; a consumer's input in ``pruned`` already has fewer columns.
    """
    import torch

    acc: dict[str, list[Any]] = {}
    grabbed: dict[tuple[int, str], torch.Tensor] = {}
    om, pm = dict(original.named_modules()), dict(pruned.named_modules())

    def grab(which: int, name: str, mod: torch.nn.Module):
        def f(_m: Any, inp: Any, _out: Any) -> None:
            grabbed[(which, name)] = _as_rows(inp[0].detach(), mod).double()

        return f

    hooks = [om[n].register_forward_hook(grab(0, n, om[n])) for n in names]
    hooks += [pm[n].register_forward_hook(grab(1, n, pm[n])) for n in names]
    try:
        original.eval()
        pruned.eval()
        with torch.no_grad():
            for i in range(0, int(inputs.shape[0]), batch_size):
                xb = inputs[i : i + batch_size]
                original(xb)
                pruned(xb)
                for n in names:
                    x, z = grabbed.pop((0, n)), grabbed.pop((1, n))
                    z = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)
                    s = acc.setdefault(n, [0, 0, 0])
                    s[0] = s[0] + z.T @ z
                    s[1] = s[1] + z.T @ x
                    s[2] += len(z)
    finally:
        for h in hooks:
            h.remove()
    return {n: (s[0] / s[2], s[1] / s[2], s[2]) for n, s in acc.items()}


def refit_consumers(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    tracker: Tracker,
    consumers: list[str],
    inputs: torch.Tensor,
    ridge: float = 1e-3,
) -> dict[str, float]:
    """Least-squares refit of ``consumers`` in ``pruned`` to reproduce the original layers' outputs.

    Returns, per consumer, the relative residual (unexplained output energy / output energy) on ``inputs``.
    """
    import torch

    om, pm = dict(original.named_modules()), dict(pruned.named_modules())
    fit = [n for n in consumers if refittable(pm[n])]
    moments = consumer_moments(original, pruned, fit, inputs)
    residual: dict[str, float] = {}
    for n in fit:
        zz, zx, _ = moments[n]
        w0 = om[n].weight.detach().double().reshape(om[n].weight.shape[0], -1)
        b0 = om[n].bias.detach().double() if om[n].bias is not None else torch.zeros(w0.shape[0], dtype=w0.dtype)
        rows = tracker.kept_out.get(n)
        if rows is not None:
            w0, b0 = w0[rows], b0[rows]
        # target y = W0 x + b0 (original output rows this layer still has); E[z y^T] = E[z x^T] W0^T + E[z] b0^T
        zy = zx @ w0.T + zz[:, -1:] @ b0[None, :]
        reg = ridge * float(torch.diagonal(zz)[:-1].mean().clamp_min(1e-12))
        eye = torch.eye(zz.shape[0], dtype=zz.dtype)
        eye[-1, -1] = 0.0  # the bias is not shrunk
        theta = torch.linalg.solve(zz + reg * eye, zy)
        mod = pm[n]
        w_new = theta[:-1].T.reshape(mod.weight.shape).to(mod.weight.dtype).contiguous()
        with torch.no_grad():
            mod.weight.copy_(w_new)
            b_new = theta[-1].to(mod.weight.dtype).contiguous()
            if mod.bias is None:
                mod.bias = torch.nn.Parameter(b_new)
            else:
                mod.bias.copy_(b_new)
        # E||y - theta^T z||^2 = E[y^T y] - 2 tr(theta^T E[z y^T]) + tr(theta^T E[z z^T] theta); E[y^T y] needs x x^T,
        # so report what the fit explains relative to the original output energy seen through z (a lower bound)
        yy = float(torch.trace(zy.T @ torch.linalg.pinv(zz) @ zy))
        fitted = float(torch.trace(theta.T @ zz @ theta))
        residual[n] = round(max(0.0, yy - fitted) / max(yy, 1e-30), 6)
    return residual


def mean_compensate(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    consumer: str,
    dropped_cols: list[int],
    kept_cols: list[int],
    channel_means: torch.Tensor,
) -> None:
    """For a consumer that cannot be refitted (a kxk conv): fold the removed input channels' mean contribution
    into its bias. ``channel_means``: the mean of each original input channel (padding ignored)."""
    import torch

    om, pm = dict(original.named_modules()), dict(pruned.named_modules())
    w0 = om[consumer].weight.detach()
    if not dropped_cols:
        return
    # sum over the kernel's spatial taps: a constant input contributes W[:, c].sum() * mean at every position
    taps = w0[:, dropped_cols].reshape(w0.shape[0], len(dropped_cols), -1).sum(-1)
    delta = taps @ channel_means[dropped_cols].to(taps.dtype)
    mod = pm[consumer]
    with torch.no_grad():
        if mod.bias is None:
            mod.bias = torch.nn.Parameter(delta.clone())
        else:
            mod.bias.add_(delta)


def norm_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    import torch

    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def reestimate_bn(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    tracker: Tracker,
    inputs: torch.Tensor,
    *,
    mode: str = "relative",
    blend: float = 1.0,
    only: list[str] | None = None,
) -> int:
    """Re-estimate the running statistics of the BatchNorms of ``pruned`` (in place). Returns how many changed.

    ``relative``: shift/scale the original statistics by how pruning moved each channel on ``inputs``;
    ``absolute``: statistics from ``inputs`` alone. ``only``: restrict to these BatchNorms.
    """
    import torch

    pn = norm_layers(pruned)
    on = norm_layers(original)
    names = [n for n in pn if n in on and (only is None or n in only)]
    if not names:
        return 0
    from packager.compress.stats import input_moments

    new = input_moments(pruned, names, inputs)  # what each BatchNorm's input is now, per channel
    old = input_moments(original, names, inputs) if mode == "relative" else {}
    changed = 0
    for n in names:
        bn = pn[n]
        rm, rv = bn.running_mean.detach().double(), bn.running_var.detach().double()
        m_new, v_new = new[n]
        if mode == "relative":
            keep = tracker.kept_out.get(n, list(range(len(rm))))
            m_old, v_old = old[n][0][keep], old[n][1][keep]
            eps = float(bn.eps)
            target_m = rm + (m_new - m_old)
            target_v = rv * (v_new + eps) / (v_old + eps)
        else:
            target_m, target_v = m_new, v_new
        with torch.no_grad():
            bn.running_mean.copy_((rm + blend * (target_m - rm)).to(bn.running_mean.dtype))
            bn.running_var.copy_((rv + blend * (target_v - rv)).to(bn.running_var.dtype))
        changed += 1
    return changed


def changed_norms(
    original: torch.nn.Module, pruned: torch.nn.Module, inputs: torch.Tensor, tol: float = 1e-6
) -> list[str]:
    """BatchNorms whose input differs between the two models on ``inputs`` (those pruning moved)."""
    import torch

    pn, on = norm_layers(pruned), norm_layers(original)
    names = [n for n in pn if n in on]
    if not names:
        return []
    x = inputs[: min(4, int(inputs.shape[0]))]
    got: dict[tuple[int, str], torch.Tensor] = {}

    def grab(which: int, name: str):
        def f(_m: Any, inp: Any, _out: Any) -> None:
            got[(which, name)] = inp[0].detach()

        return f

    hooks = [on[n].register_forward_hook(grab(0, n)) for n in names]
    hooks += [pn[n].register_forward_hook(grab(1, n)) for n in names]
    try:
        with torch.no_grad():
            original.eval()(x)
            pruned.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for n in names:
        a, b = got.get((0, n)), got.get((1, n))
        if a is None or b is None:
            continue
        if a.shape != b.shape:
            out.append(n)  # channels removed: its statistics describe other channels now
            continue
        if float((a - b).abs().max()) > tol * max(1.0, float(a.abs().max())):
            out.append(n)
    return out


def agreement(
    model: torch.nn.Module, inputs: torch.Tensor, reference: Any, classifier: bool
) -> dict[str, float | None]:
    """Cosine, SNR and top-1 agreement of ``model`` with ``reference`` on ``inputs`` (verify.compute_metrics)."""
    from packager.compress.allocate import run_batched
    from packager.verify import compute_metrics

    m = compute_metrics([reference], [run_batched(model.eval(), inputs)], classifier=classifier)
    return {k: (round(float(v), 6) if v is not None else None) for k, v in m.items() if k in GUARD_KEYS}


GUARD_KEYS = ("top1_agreement", "cosine", "snr_db")


def not_worse(after: dict[str, float | None], before: dict[str, float | None]) -> bool:
    """The guard: top-1 agreement must not drop; at equal agreement (or none), cosine must not drop."""
    a, b = after.get("top1_agreement"), before.get("top1_agreement")
    if a is not None and b is not None and a != b:
        return a > b
    return float(after.get("cosine") or 0.0) >= float(before.get("cosine") or 0.0)


def bn_step(
    original: torch.nn.Module,
    pruned: torch.nn.Module,
    tracker: Tracker,
    inputs: torch.Tensor,
    guard_inputs: torch.Tensor,
    reference: Any,
    cfg: RecoveryConfig,
    *,
    classifier: bool,
) -> BnReport:
    """BatchNorm re-estimation as its own reported step: re-estimate, measure on the guard data, keep or undo."""
    import copy

    mode = "relative" if cfg.bn == "auto" else cfg.bn
    rep = BnReport(mode=cfg.bn, applied=False, samples=int(inputs.shape[0]))
    if cfg.bn == "off":
        rep.reason = "off"
        return rep
    if not norm_layers(pruned):
        rep.reason = "the model has no BatchNorm"
        return rep
    targets = changed_norms(original, pruned, inputs)
    if not targets:
        rep.reason = "pruning changed no BatchNorm's input"
        return rep
    rep.before = agreement(pruned, guard_inputs, reference, classifier)
    saved = {n: (copy.deepcopy(m.running_mean), copy.deepcopy(m.running_var)) for n, m in norm_layers(pruned).items()}
    rep.layers = reestimate_bn(original, pruned, tracker, inputs, mode=mode, blend=cfg.bn_blend, only=targets)
    rep.after = agreement(pruned, guard_inputs, reference, classifier)
    if not_worse(rep.after, rep.before):
        rep.applied = True
        rep.reason = f"{mode} re-estimation of {rep.layers} BatchNorm(s) kept: agreement on the guard data did not drop"
    else:
        import torch

        mods = norm_layers(pruned)
        with torch.no_grad():
            for n, (rm, rv) in saved.items():
                mods[n].running_mean.copy_(rm)
                mods[n].running_var.copy_(rv)
        rep.reason = f"{mode} re-estimation undone: it lowered agreement on the guard data"
    return rep
