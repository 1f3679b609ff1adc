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
  200 dB for an exact match and never more (JSON has no infinity)::

    >>> round(snr_db(ref, got), 4), snr_db(ref, ref)
    (6.9897, 200.0)

* :func:`max_abs_error`: the largest |got - ref| anywhere::

    >>> max_abs_error(ref, got)
    1.0

* :func:`top1_agreement`: the fraction of samples whose argmax of the **first output** equals the
  reference's (ties go to the first index, as numpy's argmax). Meaningful for classifiers only::

    >>> top1_agreement(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [3.0, 2.0]]))
    0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the SNR reported for an exact match, and the most any comparison reports (dB)
SNR_CAP_DB = 200.0

__all__ = ["SNR_CAP_DB", "compare", "cosine", "max_abs_error", "per_sample", "snr_db", "stack", "top1_agreement"]


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
    """10*log10(signal / noise) over all samples; 200 (:data:`SNR_CAP_DB`) when exact, never above it."""
    r, g = _pair(ref, got)
    noise = float(np.sum((g - r) ** 2))
    if noise == 0:
        return SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10 * np.log10(max(float(np.sum(r**2)), 1e-30) / noise)))


def max_abs_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| over every value of every sample (0 for no values)."""
    r, g = _pair(ref, got)
    return float(np.max(np.abs(g - r))) if r.size else 0.0


def top1_agreement(ref_first: np.ndarray, got_first: np.ndarray) -> float:
    """Fraction of samples whose argmax of the first output (``(N, ...)``, flattened per sample) matches."""
    r, g = np.asarray(ref_first), np.asarray(got_first)
    if r.shape != g.shape or r.ndim == 0 or len(r) == 0:
        raise ValueError(f"first outputs differ in shape or are empty: {g.shape} vs {r.shape}")
    n = len(r)
    return float(np.mean(r.reshape(n, -1).argmax(axis=1) == g.reshape(n, -1).argmax(axis=1)))


def compare(
    reference: Sequence[np.ndarray], actual: Sequence[np.ndarray], *, classifier: bool
) -> dict[str, float | None]:
    """All four numbers for one output list against the reference (one ``(N, ...)`` array per output).

    ``top1_agreement`` is None unless ``classifier``: the argmax of an embedding means nothing.

    >>> r = [np.array([[1.0, 0.0], [0.0, 2.0]])]
    >>> m = compare(r, [np.array([[1.0, 1.0], [0.0, 2.0]])], classifier=True)
    >>> (round(m["cosine"], 6), round(m["snr_db"], 4), m["max_abs_error"], m["top1_agreement"])
    (0.853553, 6.9897, 1.0, 1.0)
    """
    if len(reference) != len(actual):
        raise ValueError(f"{len(actual)} outputs against {len(reference)} in the reference")
    ref, got = per_sample(reference), per_sample(actual)
    return {
        "max_abs_error": max_abs_error(ref, got),
        "cosine": cosine(ref, got),
        "snr_db": snr_db(ref, got),
        "top1_agreement": top1_agreement(reference[0], actual[0]) if classifier else None,
    }
