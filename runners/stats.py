"""Latency statistics, computed in exactly one place, from raw samples.

Everything that shows a percentile or an interval (runner results, the gate,
reports) calls :meth:`LatencyStats.from_samples`, so one number means one
thing everywhere, and the raw samples always travel next to the summary.

Confidence intervals of quantiles are distribution-free: the interval for the
q-quantile is a pair of order statistics whose ranks come from the binomial
distribution of "how many samples fall below the true quantile". With
n=100 samples, the 95% interval of p50 is roughly sample ranks 40..61 and
needs no assumption that latencies are normal (they are not: long right tail).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: Fraction trimmed from *each* end for ``trimmed_mean_ms`` (0.1 => middle 80%).
TRIM = 0.1
CONFIDENCE = 0.95


def _binom_cdf_table(n: int, q: float) -> np.ndarray:
    """CDF of Binomial(n, q) at 0..n, computed in log space (no scipy needed)."""
    k = np.arange(n + 1)
    if q <= 0.0 or q >= 1.0:
        return np.where(k >= (0 if q <= 0 else n), 1.0, 0.0)
    logc = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    logp = logc + k * math.log(q) + (n - k) * math.log1p(-q)
    pmf = np.exp(logp - logp.max())
    pmf /= pmf.sum()
    return np.cumsum(pmf)


def quantile_ci(sorted_samples: np.ndarray, q: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free CI for the q-quantile from sorted samples.

    Returns (lo, hi) as sample values. With too few samples for the requested
    confidence the bound falls back to the sample min/max, i.e. the interval is
    honestly wide rather than falsely tight.
    """
    n = len(sorted_samples)
    if n == 0:
        return (math.nan, math.nan)
    if n == 1:
        v = float(sorted_samples[0])
        return (v, v)
    alpha = 1.0 - confidence
    cdf = _binom_cdf_table(n, q)
    # lower rank l (1-based): largest l with P(B <= l-1) <= alpha/2
    lo_idx = int(np.searchsorted(cdf, alpha / 2, side="right"))  # count of ranks with cdf<=a/2
    hi_idx = int(np.searchsorted(cdf, 1 - alpha / 2, side="left")) + 1
    lo_rank = max(1, lo_idx)  # 1-based order statistic
    hi_rank = min(n, hi_idx)
    return (float(sorted_samples[lo_rank - 1]), float(sorted_samples[hi_rank - 1]))


def min_samples(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples for which :func:`quantile_ci` gives a real ``confidence`` interval of the q-quantile.

    The interval's bounds are order statistics chosen with (1 - confidence)/2 in each tail. Even the
    widest pair, [min, max], misses the true quantile when every sample falls below it (probability
    q^n) or none does ((1 - q)^n); each must be at most (1 - confidence)/2, else :func:`quantile_ci`
    clamps to the sample's min/max and the interval is narrower than it claims (with n = 3, [min, max]
    covers p90 only 27% of the time). At 95%:

    >>> [min_samples(q) for q in (0.50, 0.90, 0.99)]
    [6, 36, 368]
    """
    tail = (1.0 - confidence) / 2
    n = 1
    while q**n > tail or (1.0 - q) ** n > tail:
        n += 1
    return n


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration latencies in milliseconds.

    >>> s = LatencyStats.from_samples([10.0] * 9 + [20.0])
    >>> (s.n, s.p50_ms, s.max_ms)
    (10, 10.0, 20.0)
    """

    n: int
    mean_ms: float
    trimmed_mean_ms: float
    std_ms: float
    cv: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    p50_ci_ms: tuple[float, float]
    p90_ci_ms: tuple[float, float]
    confidence: float = CONFIDENCE

    @classmethod
    def from_samples(cls, samples_ms: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> LatencyStats:
        a = np.sort(np.asarray(samples_ms, dtype=np.float64))
        n = int(a.size)
        if n == 0:
            raise ValueError("no latency samples")
        if not np.all(np.isfinite(a)) or a[0] < 0:
            raise ValueError("latency samples must be finite and non-negative")
        k = int(n * TRIM)
        trimmed = a[k : n - k] if n - 2 * k > 0 else a
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if n > 1 else 0.0

        def pct(p: float) -> float:
            return float(np.quantile(a, p, method="linear"))

        return cls(
            n=n,
            mean_ms=mean,
            trimmed_mean_ms=float(trimmed.mean()),
            std_ms=std,
            cv=std / mean if mean > 0 else 0.0,
            min_ms=float(a[0]),
            p50_ms=pct(0.50),
            p90_ms=pct(0.90),
            p99_ms=pct(0.99),
            max_ms=float(a[-1]),
            p50_ci_ms=quantile_ci(a, 0.50, confidence),
            p90_ci_ms=quantile_ci(a, 0.90, confidence),
            confidence=confidence,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["p50_ci_ms"] = list(self.p50_ci_ms)
        d["p90_ci_ms"] = list(self.p90_ci_ms)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        d = dict(d)
        d["p50_ci_ms"] = tuple(d["p50_ci_ms"])
        d["p90_ci_ms"] = tuple(d["p90_ci_ms"])
        return cls(**d)
