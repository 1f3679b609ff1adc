"""How close an artifact's outputs are to the fp32 reference: each number defined once, here.

Verification (``mpk package``), the on-device accuracy check of every runner (``mpk bench``),
per-layer sensitivity (``mpk tune``) and the gate's accuracy floors all mean these functions; the
Android and iOS apps port them and are checked number by number against them. numpy only.

Outputs are compared **per sample**: a sample's outputs (all of them, flattened and concatenated)
form one vector. :func:`per_sample` builds the ``(N, D)`` matrix from one array per output whose
leading axis is the sample. The worked example used below, two samples of one 2-value output::

    >>> ref = per_sample([np.array([[1.0, 0.0], [0.0, 2.0]])])
    >>> got = per_sample([np.array([[1.0, 1.0], [0.0, 2.0]])])

* :func:`cosine`: the mean over samples of each sample's cosine similarity (sample 1: 1/sqrt(2),
  sample 2: 1). Both vectors zero counts as 1 (identical), exactly one zero as 0::

    >>> round(cosine(ref, got), 6)
    0.853553

* :func:`snr_db`: 10*log10(sum ref^2 / sum (got - ref)^2) over all samples at once (5 / 1 here),
  200 dB for an exact match and never more, -200 dB for a reference of zeros that ``got`` is not (JSON has no
  infinity); a tiny reference is not floored, so an all-zero ``got`` of a 1e-25 reference is 0 dB, not 185::

    >>> round(snr_db(ref, got), 4), snr_db(ref, ref)
    (6.9897, 200.0)

* :func:`max_abs_error`: the largest |got - ref| anywhere::

    >>> max_abs_error(ref, got)
    1.0

* :func:`top1_agreement`: over the **decisions** of the first output on which the reference has a **clear top-1**,
  the fraction whose argmax equals the reference's (ties go to the first index, as numpy's argmax). A decision is
  one sample of a classifier (all of its first output), one position of a language model (the last axis: the
  vocabulary), one pixel of a segmentation model (the class axis, axis 1 of a sample) (:func:`decisions`).
  Meaningful for those tasks only (:data:`TASKS`); ``None`` for any other, and when no decision is clear.

* **clear top-1** (:func:`clear`): the reference's best score beats its second best by at least
  :data:`CLEAR_MARGIN` (0.5) standard deviations of that decision's scores. Scale-free (logits x 10 or + 5 change
  nothing) and defined once. A decision closer than that is left out because the numeric noise every artifact is
  allowed can flip it, so agreement on it says nothing about the artifact: random-init and untrained models are
  full of such near-ties, and so are real photos that sit between two classes. Measured on EfficientNet-Lite0
  (ImageNet weights) over 204 held-out photo views, its ExecuTorch int8 artifact (cosine 0.99) changed the top-1
  of 35 views, every one with a margin of at most 0.51 standard deviations (34 under 0.36); counted from 0.1 it
  agreed on 0.894 of 179 views, from 0.5 on 0.990 of 98. Worked example, scores [2.0, 1.98, 0.0, 0.0] (std 0.99):
  margin 0.02 = 0.02 std, not clear; [2.0, 1.5, 0.0, 0.0] (std 0.89): margin 0.5 = 0.56 std, clear. With the
  second sample's argmax moved to index 1, the first sample is not counted::

    >>> ref = np.array([[2.0, 1.98, 0.0, 0.0], [2.0, 1.5, 0.0, 0.0]])
    >>> got = np.array([[1.98, 2.0, 0.0, 0.0], [1.5, 2.0, 0.0, 0.0]])
    >>> clear(ref).tolist(), top1_agreement(ref, got), top1_counted(ref)
    ([False, True], 0.0, 1)
    >>> top1_agreement(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [3.0, 2.0]]))
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the SNR reported for an exact match, and the most any comparison reports (dB)
SNR_CAP_DB = 200.0
#: a decision's top-1 is clear when it beats the second best by this many standard deviations of its scores
CLEAR_MARGIN = 0.5
#: tasks with a top-1: one decision per sample, per position (last axis), per pixel (a sample's axis 1)
TASKS = ("classification", "language-model", "segmentation")

__all__ = [
    "CLEAR_MARGIN",
    "SNR_CAP_DB",
    "TASKS",
    "accuracy",
    "clear",
    "compare",
    "cosine",
    "decisions",
    "max_abs_error",
    "per_sample",
    "snr_db",
    "stack",
    "top1_agreement",
    "top1_counted",
]


def per_sample(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """``(N, D)`` float64: each output ``(N, ...)`` flattened per sample, the outputs side by side."""
    if not outputs:
        raise ValueError("no outputs to compare")
    n = len(outputs[0])
    if any(len(o) != n for o in outputs):
        raise ValueError(f"outputs disagree on the number of samples: {[len(o) for o in outputs]}")
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(n, -1) for o in outputs], axis=1)


def stack(samples: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-sample output lists (``samples[i][j]``: output j of sample i) -> one ``(N, ...)`` array per output."""
    if not samples:
        raise ValueError("no samples to compare")
    return [np.stack([np.asarray(s[j]) for s in samples]) for j in range(len(samples[0]))]


def _pair(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if r.shape != g.shape:
        raise ValueError(f"outputs differ in shape from the reference: {g.shape} vs {r.shape}")
    if r.ndim != 2:
        raise ValueError(f"expected (samples, values) matrices from per_sample(), got shape {r.shape}")
    return r, g


def cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over samples of cos(got_i, ref_i); both zero -> 1, one zero -> 0. See the module docstring."""
    r, g = _pair(ref, got)
    num = np.sum(r * g, axis=1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    exact = ~np.any(r != g, axis=1)
    per = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(exact, 1.0, 0.0))
    return float(np.mean(per))


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10*log10(signal / noise) over all samples; 200 (:data:`SNR_CAP_DB`) when exact, within [-200, 200]."""
    r, g = _pair(ref, got)
    noise = float(np.sum((g - r) ** 2))
    if noise == 0:
        return SNR_CAP_DB
    signal = float(np.sum(r**2))
    if signal == 0:
        return -SNR_CAP_DB
    return float(np.clip(10 * np.log10(signal / noise), -SNR_CAP_DB, SNR_CAP_DB))


def max_abs_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| over every value of every sample (0 for no values)."""
    r, g = _pair(ref, got)
    return float(np.max(np.abs(g - r))) if r.size else 0.0


def decisions(first: np.ndarray, task: str = "classification") -> np.ndarray:
    """``(M, C)`` float64: the first output ``(N, *sample_shape)`` as one row of scores per decision.

    classification: a sample (all its values); language-model: a position (rows of the last axis); segmentation:
    a pixel (the class axis is a sample's axis 1, ``(N, 1, C, H, W)`` -> ``N*H*W`` rows of ``C``).

    >>> decisions(np.zeros((2, 1, 4, 7)), "language-model").shape
    (8, 7)
    >>> decisions(np.zeros((2, 1, 3, 5, 5)), "segmentation").shape
    (50, 3)
    """
    a = np.asarray(first, dtype=np.float64)
    if a.ndim == 0 or len(a) == 0:
        raise ValueError(f"first output is empty: shape {a.shape}")
    if task == "language-model":
        return a.reshape(-1, a.shape[-1])
    if task == "segmentation":
        if a.ndim < 3:
            raise ValueError(f"segmentation needs a class axis: first output has shape {a.shape}")
        return np.moveaxis(a, 2, -1).reshape(-1, a.shape[2])
    return a.reshape(len(a), -1)


def clear(scores: np.ndarray) -> np.ndarray:
    """Per row of ``(M, C)`` scores: does its best beat its second best by :data:`CLEAR_MARGIN` standard
    deviations of the row, and by more than nothing? (See the module docstring's worked example.) An exact tie, a
    constant row and a row of fewer than 2 scores are never clear."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        return np.zeros(len(s), dtype=bool)
    top2 = -np.partition(-s, 1, axis=1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    return (margin > 0) & (margin >= CLEAR_MARGIN * s.std(axis=1))


def top1_counted(ref_first: np.ndarray, task: str = "classification") -> int:
    """How many decisions of the reference's first output have a clear top-1 (the ones agreement counts)."""
    return int(np.count_nonzero(clear(decisions(ref_first, task))))


def top1_agreement(ref_first: np.ndarray, got_first: np.ndarray, task: str = "classification") -> float | None:
    """Over the reference's clear-top-1 decisions of the first output, the fraction whose argmax matches; None
    when no decision is clear. See the module docstring."""
    r, g = np.asarray(ref_first), np.asarray(got_first)
    if r.shape != g.shape or r.ndim == 0 or len(r) == 0:
        raise ValueError(f"first outputs differ in shape or are empty: {g.shape} vs {r.shape}")
    rr, gg = decisions(r, task), decisions(g, task)
    keep = clear(rr)
    if not keep.any():
        return None
    return float(np.mean(rr[keep].argmax(axis=1) == gg[keep].argmax(axis=1)))


def accuracy(first: np.ndarray, labels: np.ndarray) -> float:
    """A classifier's top-1 accuracy against ``labels``: the fraction of samples whose first output's argmax is
    the label (every sample counts, clear or not: this is the model against the truth, not against fp32).
    Labels beyond the samples are ignored::

        >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1, 0]))
        0.6666666666666666
    """
    f = np.asarray(first)
    n = len(f)
    if n == 0 or len(labels) < n:
        raise ValueError(f"{n} samples, {len(labels)} labels")
    return float(np.mean(f.reshape(n, -1).argmax(axis=1) == np.asarray(labels)[:n]))


def compare(
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    *,
    classifier: bool = False,
    task: str | None = None,
) -> dict[str, float | int | None]:
    """All the numbers for one output list against the reference (one ``(N, ...)`` array per output).

    ``task`` (one of :data:`TASKS`, else no top-1) says how the first output decides; ``classifier=True`` is
    ``task="classification"``. ``top1_agreement`` and ``top1_counted`` (how many decisions were clear, out of
    ``top1_decisions``) are None for any other task: the argmax of an embedding means nothing.

    >>> r = [np.array([[1.0, 0.0], [0.0, 2.0]])]
    >>> m = compare(r, [np.array([[1.0, 1.0], [0.0, 2.0]])], classifier=True)
    >>> (round(m["cosine"], 6), round(m["snr_db"], 4), m["max_abs_error"], m["top1_agreement"], m["top1_counted"])
    (0.853553, 6.9897, 1.0, 1.0, 2)
    """
    if len(reference) != len(actual):
        raise ValueError(f"{len(actual)} outputs against {len(reference)} in the reference")
    task = task or ("classification" if classifier else None)
    ref, got = per_sample(reference), per_sample(actual)
    has_top1 = task in TASKS
    return {
        "max_abs_error": max_abs_error(ref, got),
        "cosine": cosine(ref, got),
        "snr_db": snr_db(ref, got),
        "top1_agreement": top1_agreement(reference[0], actual[0], task) if has_top1 else None,  # type: ignore[arg-type]
        "top1_counted": top1_counted(reference[0], task) if has_top1 else None,  # type: ignore[arg-type]
        "top1_decisions": len(decisions(reference[0], task)) if has_top1 else None,  # type: ignore[arg-type]
    }
