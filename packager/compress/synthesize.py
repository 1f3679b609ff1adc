"""Data-free recovery data: images synthesised from the model's own BatchNorm statistics (DeepInversion-style).

Every BatchNorm remembers the mean and variance of its input over the training
set. Starting from seeded noise, the images are optimised (Adam on the pixels)
so that, batch-wide, each BatchNorm's input has those statistics again:

    loss = sum over BatchNorms of ||mean_b - running_mean||_2 + ||var_b - running_var||_2
           + tv * total variation + l2 * ||x||^2

(Yin et al., "Dreaming to Distill", 2020, without the class-conditional term, so
no label is assumed). The result is not a photo, but its activations look like
the training data's to every BatchNorm, which is what distillation and channel
statistics need when the images at hand are few.

Bounded by ``max_seconds`` and ``steps``; seeded (same seed, same images, on the
same machine and thread count); progress through a callback. A model without
BatchNorm has nothing to synthesise from: UsageError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mpk.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class SynthesisConfig:
    """``count=64, max_seconds=120``: 64 images, optimised for at most 2 minutes (or ``steps``)."""

    count: int = 64
    steps: int = 200
    max_seconds: float = 120.0
    batch_size: int = 16
    lr: float = 0.1
    tv: float = 1e-4
    l2: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for k in ("count", "steps", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{k} must be a positive integer, got {v!r}")
        for k in ("max_seconds", "lr"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not v > 0:
                problems.append(f"{k} must be > 0, got {v!r}")
        for k in ("tv", "l2"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or v < 0:
                problems.append(f"{k} must be >= 0, got {v!r}")
        if problems:
            raise UsageError("synthesis: " + "; ".join(problems))


@dataclass
class SynthesisReport:
    images: int
    steps_run: int
    seconds: float
    #: BatchNorm-statistics loss per batch: [first step, last step]
    loss_first: list[float] = field(default_factory=list)
    loss_last: list[float] = field(default_factory=list)
    stopped_by: str = "steps"
    batchnorms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norms(model: torch.nn.Module) -> list[Any]:
    import torch

    return [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


def synthesize(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    cfg: SynthesisConfig | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[torch.Tensor, SynthesisReport]:
    """``cfg.count`` inputs shaped like ``input_shape`` (batch dim 1 or any) whose BatchNorm statistics match.

    ``progress(step, total_steps, loss)`` is called after every step. The model is left as it was.
    """
    import torch

    cfg = cfg or SynthesisConfig()
    norms = _norms(model)
    if not norms:
        raise UsageError(
            "data-free synthesis needs BatchNorm layers (it matches their stored statistics); this model has none",
            hint="distill on images instead (distill.data: images)",
        )
    shape = tuple(input_shape[1:])
    t0 = time.monotonic()
    rep = SynthesisReport(images=0, steps_run=0, seconds=0.0, batchnorms=len(norms))
    losses: list[torch.Tensor] = []

    def hook(bn: Any, inp: Any, _out: Any) -> None:
        x = inp[0]
        dims = [0, *list(range(2, x.dim()))]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        losses.append(torch.norm(mean - bn.running_mean, 2) + torch.norm(var - bn.running_var, 2))

    was_training = model.training
    params = [p for p in model.parameters()]
    req = [p.requires_grad for p in params]
    hooks = [bn.register_forward_hook(hook) for bn in norms]
    out: list[torch.Tensor] = []
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = -(-cfg.count // cfg.batch_size)
    per_batch_seconds = cfg.max_seconds / batches
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        for b in range(batches):
            n = min(cfg.batch_size, cfg.count - b * cfg.batch_size)
            x = torch.randn((n, *shape), generator=gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9))
            tb = time.monotonic()
            for step in range(cfg.steps):
                losses.clear()
                opt.zero_grad(set_to_none=True)
                model(x)
                bn_loss = torch.stack(losses).sum()
                loss = bn_loss + cfg.tv * _tv(x) + cfg.l2 * (x * x).mean()
                loss.backward()
                opt.step()
                if step == 0:
                    rep.loss_first.append(round(float(bn_loss.detach()), 6))
                rep.steps_run += 1
                if progress is not None:
                    progress(b * cfg.steps + step + 1, batches * cfg.steps, float(bn_loss.detach()))
                if time.monotonic() - tb > per_batch_seconds:
                    rep.stopped_by = "time cap"
                    break
            with torch.no_grad():
                losses.clear()
                model(x)
                rep.loss_last.append(round(float(torch.stack(losses).sum()), 6))
            out.append(x.detach())
    finally:
        for h in hooks:
            h.remove()
        for p, r in zip(params, req, strict=True):
            p.requires_grad_(r)
        model.train(was_training)
    images = torch.cat(out)
    rep.images = int(images.shape[0])
    rep.seconds = round(time.monotonic() - t0, 3)
    return images, rep


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: keeps the images from being pure noise."""
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
