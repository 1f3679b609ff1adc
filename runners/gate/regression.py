"""Regression: is this run slower than the baseline on the same device, for the same artifact?

Two numbers, both shown, both needed:

* the Mann-Whitney U test on the raw per-iteration samples (two-sided p-value):
  "is there a difference at all, beyond noise?" It assumes nothing about the
  shape of the latency distribution (it has a long right tail);
* the relative change of the median, with a seeded bootstrap 95% CI:
  "how big is it?" A 0.3% slowdown can be highly significant with 10,000
  samples and still not matter.

A regression needs both: p < alpha (0.01) AND slowdown > threshold (5%).
Example: median 10.0 -> 11.0 ms over 200 samples each, p = 1e-30: +10.0%,
a regression. An improvement of the same size is reported, never failed.

Only like is compared with like: same device that really ran it (``ran_on``),
same real/emulated kind, same artifact. An emulated cell (host CPU standing in
for a phone) is never compared with a real phone's baseline, nor the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mpk.contract import Outcome
from runners.gate.verdict import Check, cell_samples

ALPHA = 0.01
THRESHOLD = 0.05
N_BOOT = 2000

#: (current cell) -> (baseline cell, where it came from) or None
BaselineLookup = Callable[[dict[str, Any]], "tuple[dict[str, Any], str] | None"]


@dataclass(frozen=True)
class Comparison:
    """Current vs baseline samples of one cell."""

    n_current: int
    n_baseline: int
    median_current_ms: float
    median_baseline_ms: float
    rel_change: float
    rel_change_ci: tuple[float, float]
    p_value: float
    verdict: Literal["regression", "improvement", "no-change"]
    alpha: float
    threshold: float

    def describe(self) -> str:
        lo, hi = self.rel_change_ci
        return (
            f"median {self.median_baseline_ms:.3f} -> {self.median_current_ms:.3f} ms "
            f"({self.rel_change:+.1%}, 95% CI [{lo:+.1%}, {hi:+.1%}]), Mann-Whitney p={self.p_value:.2g} "
            f"(n={self.n_current} vs {self.n_baseline}; regression needs p<{self.alpha:g} and >{self.threshold:.0%})"
        )


def mann_whitney_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test: normal approximation with tie and continuity
    correction (what ``scipy.stats.mannwhitneyu(method="asymptotic")`` computes), in numpy, so the gate
    installs without scipy.

    >>> round(mann_whitney_p(np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0])), 4)
    0.0304
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        return 1.0
    both = np.concatenate([a, b])
    if np.ptp(both) == 0:  # every value equal: no evidence of any difference
        return 1.0
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # average rank of each distinct value (ties share the mean of their positions), 1-based
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    u1 = float(mean_rank[inverse[:n1]].sum()) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mu = n1 * n2 / 2.0
    var = n1 * n2 / 12.0 * ((n + 1) - float(np.sum(counts**3 - counts)) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (abs(u1 - mu) - 0.5) / math.sqrt(var)  # continuity correction towards the mean
    return float(min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2.0))))


def bootstrap_rel_change_ci(
    cur: np.ndarray, base: np.ndarray, *, seed: int = 0, n_boot: int = N_BOOT, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of median(cur)/median(base) - 1. Seeded, so reports are reproducible."""
    rng = np.random.default_rng(seed)
    mc = np.median(cur[rng.integers(0, cur.size, size=(n_boot, cur.size))], axis=1)
    mb = np.median(base[rng.integers(0, base.size, size=(n_boot, base.size))], axis=1)
    ratio = mc / np.where(mb > 0, mb, np.nan) - 1.0
    a = (1 - confidence) / 2
    lo, hi = np.nanquantile(ratio, [a, 1 - a])
    return float(lo), float(hi)


def compare_samples(
    current: np.ndarray | list[float],
    baseline: np.ndarray | list[float],
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    seed: int = 0,
) -> Comparison:
    cur = np.asarray(current, dtype=np.float64)
    base = np.asarray(baseline, dtype=np.float64)
    mc, mb = float(np.median(cur)), float(np.median(base))
    rel = mc / mb - 1.0 if mb > 0 else 0.0
    p = mann_whitney_p(cur, base)
    ci = bootstrap_rel_change_ci(cur, base, seed=seed)
    verdict: Literal["regression", "improvement", "no-change"] = "no-change"
    if p < alpha and rel > threshold:
        verdict = "regression"
    elif p < alpha and rel < -threshold:
        verdict = "improvement"
    return Comparison(cur.size, base.size, mc, mb, rel, ci, p, verdict, alpha, threshold)


def baseline_from_results(baseline: dict[str, Any], source: str) -> BaselineLookup:
    """Lookup in a baseline results file: same ran_on, same emulated flag, same artifact."""
    index: dict[tuple[str, bool, str], dict[str, Any]] = {}
    for c in baseline.get("cells", []):
        if c["outcome"] == Outcome.OK and cell_samples(c).size:
            key = (str(c.get("ran_on") or c.get("device_id")), bool(c.get("emulated")), str(c.get("artifact_id")))
            index[key] = c

    def lookup(cell: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        key = (
            str(cell.get("ran_on") or cell.get("device_id")),
            bool(cell.get("emulated")),
            str(cell.get("artifact_id")),
        )
        hit = index.get(key)
        return (hit, source) if hit is not None else None

    return lookup


def check_regressions(
    results: dict[str, Any],
    lookup: BaselineLookup,
    *,
    alpha: float = ALPHA,
    threshold: float = THRESHOLD,
    seed: int = 0,
) -> tuple[list[Check], list[str]]:
    """One 'regression' check per ok cell that has a comparable baseline; notes for those that have none."""
    checks: list[Check] = []
    notes: list[str] = []
    for cell in results.get("cells", []):
        if cell["outcome"] != Outcome.OK:
            continue
        cur = cell_samples(cell)
        if cur.size == 0:
            continue
        dev, art = str(cell.get("device_id")), str(cell.get("artifact_id"))
        ran_on, emulated = str(cell.get("ran_on") or dev), bool(cell.get("emulated"))
        found = lookup(cell)
        if found is None:
            kind = "emulated" if emulated else "real-device"
            notes.append(f"{dev}/{art}: no {kind} baseline on {ran_on}; regression not checked")
            continue
        base_cell, source = found
        # the lookup is pluggable; enforce the like-with-like rule here too
        if bool(base_cell.get("emulated")) != emulated or str(base_cell.get("ran_on") or "") not in ("", ran_on):
            notes.append(f"{dev}/{art}: baseline from {source} ran elsewhere; regression not checked")
            continue
        cmp = compare_samples(cur, cell_samples(base_cell), alpha=alpha, threshold=threshold, seed=seed)
        verdict = "fail" if cmp.verdict == "regression" else "pass"
        checks.append(
            Check(
                name=f"{dev}/{art} regression",
                device_id=dev,
                ran_on=ran_on,
                emulated=emulated,
                artifact_id=art,
                metric="regression",
                budget=threshold,
                estimate=cmp.rel_change,
                interval=cmp.rel_change_ci,
                verdict=verdict,
                message=f"{cmp.verdict}: {cmp.describe()} vs {source}",
                extra={
                    "p_value": cmp.p_value,
                    "alpha": alpha,
                    "median_ms": cmp.median_current_ms,
                    "baseline_median_ms": cmp.median_baseline_ms,
                    "change": cmp.verdict,
                    "baseline": source,
                },
            )
        )
    return checks, notes
