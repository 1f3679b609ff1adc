"""Regression detection on seeded samples: Mann-Whitney p-value AND median slowdown, both required."""

from __future__ import annotations

import pytest

from runners.gate import evaluate
from runners.gate.regression import baseline_from_results, compare_samples
from tests.gate_factory import cell, results, samples


def test_ten_percent_slower_is_a_regression() -> None:
    cmp = compare_samples(samples(11.0, 300, seed=10), samples(10.0, 300, seed=11))
    assert cmp.verdict == "regression" and cmp.p_value < 1e-6
    assert 0.07 < cmp.rel_change < 0.13 and cmp.rel_change_ci[0] > 0.05


def test_same_distribution_is_not() -> None:
    cmp = compare_samples(samples(10.0, 300, seed=12), samples(10.0, 300, seed=13))
    assert cmp.verdict == "no-change" and cmp.p_value > 0.01 and cmp.rel_change_ci[0] < 0 < cmp.rel_change_ci[1]


def test_significant_but_small_change_is_not_a_regression() -> None:
    cmp = compare_samples(samples(10.2, 3000, seed=14, spread=0.01), samples(10.0, 3000, seed=15, spread=0.01))
    assert cmp.p_value < 1e-10 and cmp.verdict == "no-change"  # +2% is real, and under the 5% threshold


def test_improvement_is_reported_not_failed() -> None:
    base = results([cell("pixel-7", "onnx-int8", samples(10, 200, 16))])
    cur = results([cell("pixel-7", "onnx-int8", samples(8, 200, 17))])
    out = evaluate(cur, [], baseline_lookup=baseline_from_results(base, "base.json"))
    (c,) = out.checks
    assert c.verdict == "pass" and c.message.startswith("improvement") and out.exit_code == 0


def test_bootstrap_is_seeded() -> None:
    a, b = samples(10, 100, 1), samples(10.5, 100, 2)
    assert compare_samples(a, b).rel_change_ci == compare_samples(a, b).rel_change_ci


def test_emulated_never_compared_with_real_baseline() -> None:
    real_base = results([cell("pixel-7", "onnx-int8", samples(10, 200, 18))])
    emu_now = results([cell("pixel-7", "onnx-int8", samples(30, 200, 19), emulated=True)])
    out = evaluate(emu_now, [], baseline_lookup=baseline_from_results(real_base, "base.json"))
    assert out.checks == [] and any("no emulated baseline" in n for n in out.notes)
    # and the reverse: a real run is not compared with an emulated baseline
    emu_base = results([cell("pixel-7", "onnx-int8", samples(3, 200, 20), emulated=True)])
    real_now = results([cell("pixel-7", "onnx-int8", samples(10, 200, 21))])
    out = evaluate(real_now, [], baseline_lookup=baseline_from_results(emu_base, "base.json"))
    assert out.checks == [] and any("no real-device baseline" in n for n in out.notes)


def test_mann_whitney_matches_scipy_with_ties() -> None:
    """The gate's numpy Mann-Whitney (so the light install needs no scipy) is scipy's asymptotic test."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    from runners.gate.regression import mann_whitney_p

    rng = np.random.default_rng(1)
    for _ in range(200):
        n1, n2 = rng.integers(1, 80, 2)
        decimals = int(rng.integers(0, 3))  # rounding makes ties, which change the variance
        a = np.round(rng.lognormal(0, 0.1, n1) * 10, decimals)
        b = np.round(rng.lognormal(0.05 * rng.standard_normal(), 0.1, n2) * 10, decimals)
        if np.ptp(np.concatenate([a, b])) == 0:
            continue
        want = mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
        assert mann_whitney_p(a, b) == pytest.approx(want, rel=1e-9, abs=1e-15)
