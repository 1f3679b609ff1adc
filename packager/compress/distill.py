"""Recover accuracy after pruning by distilling from the unpruned model.

The teacher is the original fp32 model, so no labels are needed: the student
learns to match the teacher's temperature-softened class distribution on the
calibration images (Hinton et al.'s KD loss, scaled by T^2 so its gradient
size does not depend on T). When labels exist, cross-entropy on them is mixed
in with weight ``1 - alpha``.

Augmentation is done with torch ops on the batch, so a few hundred calibration
images give many distinct views; teacher and student always see the *same*
augmented batch. ``crop_flip``: shifted crops and flips; ``strong``: random
resized crops (35-100% of the area, aspect 3:4-4:3), flips, brightness /
contrast / saturation jitter and CutMix between the images of a batch (the
teacher labels the mixed image, so no label is needed): many more distinct
inputs from a few photos.

``data`` chooses what to train on: the images (``images``), images synthesised
from the model's BatchNorm statistics (``synthetic``, see
:mod:`packager.compress.synthesize`), or both.

Runs are deterministic for a seed (one in-process data path, seeded shuffles
and augmentations, deterministic kernels where torch has them) and bounded by
both ``epochs`` and ``max_seconds``; the cosine learning-rate schedule follows
whichever bound is closer, so a time-capped run still ends at a low rate.

BatchNorm statistics stay fixed while training (``freeze_bn``): re-estimating
them is its own, guarded step (:mod:`packager.compress.recovery`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpk.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


AUGMENTS: tuple[str, ...] = ("crop_flip", "strong", "crop", "none")


@dataclass(frozen=True)
class DistillConfig:
    """``epochs=3, max_seconds=600``: stop after 3 passes or 10 minutes, whichever comes first."""

    epochs: int = 3
    lr: float = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    temperature: float = 4.0
    #: weight of the KD term; (1 - alpha) goes to cross-entropy when labels exist
    alpha: float = 0.7
    batch_size: int = 32
    max_seconds: float = 600.0
    seed: int = 0
    #: "crop_flip" (natural images), "strong" (natural images, few of them), "crop" (digits/text: a flipped 3
    #: is not a 3), or "none"
    augment: Literal["crop_flip", "strong", "crop", "none"] = "crop_flip"
    #: how many samples of the calibration source to train on (None: the calibration set as loaded);
    #: distillation wants hundreds where calibration needs tens
    samples: int | None = None
    #: keep BatchNorm statistics fixed while training (affine still learns). Recovery runs are short and
    #: their batches small and few-image; re-estimating BN statistics from them drifts the whole network
    freeze_bn: bool = True
    #: what to train on: the images, images synthesised from BatchNorm statistics, or both
    data: Literal["images", "synthetic", "both"] = "images"
    #: synthetic images to make (data synthetic/both) and the wall-clock cap on making them
    synthetic_count: int = 64
    synthetic_seconds: float = 120.0
    #: keep the distilled weights only if agreement with the original on the guard data does not drop
    guard: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 0:
            problems.append(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if self.optimizer not in ("sgd", "adam"):
            problems.append(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not self.temperature > 0:
            problems.append(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.alpha <= 1:
            problems.append(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.max_seconds > 0:
            problems.append(f"max_seconds must be > 0, got {self.max_seconds!r}")
        if self.augment not in AUGMENTS:
            problems.append(f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        if self.data not in ("images", "synthetic", "both"):
            problems.append(f"data must be images, synthetic or both, got {self.data!r}")
        if (
            isinstance(self.synthetic_count, bool)
            or not isinstance(self.synthetic_count, int)
            or self.synthetic_count < 1
        ):
            problems.append(f"synthetic_count must be a positive integer, got {self.synthetic_count!r}")
        if not isinstance(self.synthetic_seconds, (int, float)) or not self.synthetic_seconds > 0:
            problems.append(f"synthetic_seconds must be > 0, got {self.synthetic_seconds!r}")
        for k in ("freeze_bn", "guard"):
            if not isinstance(getattr(self, k), bool):
                problems.append(f"{k} must be true or false, got {getattr(self, k)!r}")
        if self.samples is not None and (not isinstance(self.samples, int) or self.samples < 1):
            problems.append(f"samples must be a positive integer or null, got {self.samples!r}")
        if problems:
            raise UsageError("distill: " + "; ".join(problems))


@dataclass
class DistillReport:
    epochs_run: int
    steps: int
    seconds: float
    #: mean training loss per epoch
    epoch_loss: list[float] = field(default_factory=list)
    #: "epochs" or "time cap": which bound ended training
    stopped_by: str = "epochs"
    used_labels: bool = False
    samples: int = 0
    #: with data synthetic/both: the synthesis report
    synthetic: dict[str, Any] | None = None
    #: with guard: agreement with the original on the guard data before/after, and whether it was kept
    guard: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stack_samples(samples: list[tuple[np.ndarray, ...]]) -> torch.Tensor:
    """Dataset samples (each one input with batch dim 1) -> one (N, ...) tensor. Single-input models only."""
    import numpy as np
    import torch

    if not samples:
        raise UsageError("no calibration samples to train on")
    if len(samples[0]) != 1:
        raise UsageError(f"distillation supports single-input models; this one takes {len(samples[0])} inputs")
    return torch.from_numpy(np.concatenate([np.asarray(s[0], dtype=np.float32) for s in samples], axis=0))


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    alpha: float = 0.7,
) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, plus (1-alpha) * CE(labels) when labels are given."""
    import torch.nn.functional as F

    t = temperature
    kd = F.kl_div(
        F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean", log_target=True
    )
    kd = kd * (t * t)
    if labels is None:
        return kd
    return alpha * kd + (1.0 - alpha) * F.cross_entropy(student, labels)


def augment_batch(x: torch.Tensor, gen: torch.Generator, mode: str) -> torch.Tensor:
    """Random shifted crops (reflect-pad by 1/8 of the side, crop back) and optional horizontal flips;
    ``strong``: see :func:`strong_augment`."""
    import torch
    import torch.nn.functional as F

    if mode == "none" or x.dim() != 4:
        return x
    if mode == "strong":
        return strong_augment(x, gen)
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if mode == "crop_flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def strong_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop + flip (one affine resample), colour jitter, then CutMix within the batch.

    Works in the model's input units (any normalisation): jitter scales each image around its own mean,
    so a normalised and an unnormalised input get the same relative change.
    """
    import math

    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    area = 0.35 + 0.65 * torch.rand(n, generator=gen)
    logr = (torch.rand(n, generator=gen) - 0.5) * 2 * math.log(4 / 3)
    aspect = torch.exp(logr)
    sx = torch.sqrt(area * aspect).clamp(max=1.0)
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx * flip
    theta[:, 1, 1] = sy
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, (n, c, h, w), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour: brightness (shift by a fraction of the image's spread), contrast, saturation (mix with grey)
    mean = out.mean((1, 2, 3), keepdim=True)
    spread = out.std((1, 2, 3), keepdim=True).clamp_min(1e-6)
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)
    bright = (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.8 * spread
    out = (out - mean) * contrast + mean + bright
    if c == 3:
        grey = out.mean(1, keepdim=True)
        sat = 0.4 + 1.2 * torch.rand(n, 1, 1, 1, generator=gen)
        out = grey + (out - grey) * sat
    # CutMix: half the batch gets a box from a shuffled partner
    perm = torch.randperm(n, generator=gen)
    lam = torch.rand(n, generator=gen)
    mix = torch.rand(n, generator=gen) < 0.5
    for i in range(n):
        if not mix[i] or perm[i] == i:
            continue
        bh, bw = int(h * math.sqrt(1 - lam[i])), int(w * math.sqrt(1 - lam[i]))
        if bh < 1 or bw < 1:
            continue
        y0 = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        out[i, :, y0 : y0 + bh, x0 : x0 + bw] = out[perm[i], :, y0 : y0 + bh, x0 : x0 + bw]
    return out.contiguous()


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch and switch to deterministic kernels for the block, restoring the previous mode after."""
    import torch

    prev = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        torch.use_deterministic_algorithms(prev)


def train_student(
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    inputs: torch.Tensor,
    labels: torch.Tensor | None,
    cfg: DistillConfig,
    *,
    progress: bool = True,
    description: str = "distill",
) -> DistillReport:
    """The training loop shared by distillation and QAT. ``teacher=None`` trains on labels alone (CE)."""
    import torch

    if teacher is None and labels is None:
        raise UsageError("training needs a teacher model or labels; got neither")
    n = int(inputs.shape[0])
    steps_per_epoch = max(1, -(-n // cfg.batch_size))
    rep = DistillReport(epochs_run=0, steps=0, seconds=0.0, used_labels=labels is not None, samples=n)
    if cfg.epochs == 0:
        return rep
    t0 = time.monotonic()
    total_steps = cfg.epochs * steps_per_epoch
    with deterministic(cfg.seed) as gen:
        params = [p for p in student.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if teacher is not None:
            teacher.eval()
        with _progress(progress, description, cfg.epochs * steps_per_epoch) as advance:
            for _epoch in range(cfg.epochs):
                student.train()
                if cfg.freeze_bn:
                    for mod in student.modules():
                        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                            mod.eval()
                perm = torch.randperm(n, generator=gen)
                total, count = 0.0, 0
                for s in range(steps_per_epoch):
                    idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                    x = augment_batch(inputs[idx], gen, cfg.augment)
                    y = labels[idx] if labels is not None else None
                    out = student(x)
                    if teacher is not None:
                        with torch.no_grad():
                            t_out = teacher(x)
                        loss = kd_loss(out, t_out, cfg.temperature, y, cfg.alpha)
                    else:
                        loss = torch.nn.functional.cross_entropy(out, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    # cosine over whichever bound (steps or wall clock) is nearer to its end
                    done = max((rep.steps + 1) / total_steps, (time.monotonic() - t0) / cfg.max_seconds)
                    for grp in opt.param_groups:
                        grp["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
                    rep.steps += 1
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                    advance(float(loss.detach()))
                    if time.monotonic() - t0 > cfg.max_seconds:
                        rep.stopped_by = "time cap"
                        break
                rep.epochs_run += 1
                rep.epoch_loss.append(round(total / max(count, 1), 6))
                if rep.stopped_by == "time cap":
                    break
        student.eval()
    rep.seconds = round(time.monotonic() - t0, 3)
    return rep


@contextlib.contextmanager
def _progress(enabled: bool, description: str, total: int) -> Iterator[Any]:
    """A rich progress bar with the running loss; a no-op callback when disabled (tests, pipes)."""
    if not enabled:
        yield lambda loss: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    ]
    with Progress(*cols, transient=True) as prog:
        task = prog.add_task(description, total=total, loss=float("nan"))
        yield lambda loss: prog.update(task, advance=1, loss=loss)


def distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    cfg: DistillConfig | None = None,
    *,
    progress: bool = True,
) -> DistillReport:
    """Fine-tune ``student`` (e.g. the pruned model) in place to mimic ``teacher`` (the unpruned one)."""
    return train_student(student, teacher, inputs, labels, cfg or DistillConfig(), progress=progress)
