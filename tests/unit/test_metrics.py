"""One definition of each number: mpk.metrics, and every caller giving exactly its numbers."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import mpk.metrics
import mpk.yamlio
import runners.stats
from mpk import metrics


@pytest.mark.parametrize("module", [mpk.metrics, mpk.yamlio, runners.stats], ids=lambda m: m.__name__)
def test_worked_examples_in_docstrings(module) -> None:
    """The worked examples are the definitions' documentation: they must hold."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_cosine_edges_and_per_sample_mean() -> None:
    zero = np.zeros((1, 3))
    one = np.array([[1.0, 2.0, 3.0]])
    assert metrics.cosine(zero, zero) == 1.0  # both zero: identical
    assert metrics.cosine(zero, one) == 0.0 and metrics.cosine(one, zero) == 0.0  # exactly one zero
    # the mean of per-sample cosines, not the cosine of everything at once: a large sample cannot hide a bad one
    ref = np.array([[100.0, 0.0], [0.0, 1.0]])
    got = np.array([[100.0, 0.0], [1.0, 0.0]])
    assert metrics.cosine(ref, got) == pytest.approx(0.5)
    flat = float(ref.ravel() @ got.ravel() / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert flat > 0.99  # what "over all values" would have said


def test_snr_is_capped_at_200_and_exact_is_200() -> None:
    ref = np.array([[1.0, 2.0]])
    assert metrics.snr_db(ref, ref) == 200.0
    assert metrics.snr_db(ref, ref + 1e-30) == 200.0  # would be ~300 dB uncapped
    assert metrics.snr_db(ref, ref * 1.1) == pytest.approx(20.0)


def test_snr_of_a_tiny_reference_is_not_floored() -> None:
    """A random-init HF MobileNetV2 gives fp32 logits of ~1e-25 and its int8 .pte gives zeros: that is 0 dB (all of
    the reference lost), where a 1e-30 floor under the signal energy reported 185 dB."""
    tiny = np.full((4, 10), 1e-25)
    assert metrics.snr_db(tiny, np.zeros_like(tiny)) == pytest.approx(0.0)
    assert metrics.snr_db(tiny, tiny * 1.1) == pytest.approx(20.0)
    assert metrics.snr_db(np.zeros((1, 3)), np.ones((1, 3))) == -200.0
    assert metrics.snr_db(np.zeros((1, 3)), np.zeros((1, 3))) == 200.0


def test_every_caller_reports_the_same_numbers() -> None:
    """Verification, the host runner's on-device check and tune's sensitivity table: one definition."""
    from packager.compress.sensitivity import compare as sensitivity_compare
    from packager.verify import compute_metrics
    from runners.host_runner import accuracy_metrics

    rng = np.random.default_rng(3)
    ref = rng.standard_normal((12, 1, 10))
    got = ref + rng.normal(0, 0.4, ref.shape)
    want = metrics.compare([ref], [got], classifier=True)
    verify = compute_metrics([ref], [got], classifier=True)
    assert {k: verify[k] for k in want} == want
    bench = accuracy_metrics([[g] for g in got], [[r] for r in ref], task="classification")
    shared = {k: v for k, v in want.items() if k != "top1_decisions"}  # the runner result carries no total
    assert {k: bench[k] for k in shared} == shared and bench["samples"] == 12 and "top1_decisions" not in bench
    tune = sensitivity_compare([ref[:6, 0], ref[6:, 0]], [got[:6, 0], got[6:, 0]])  # batches of the first output
    assert tune == {"snr_db": round(want["snr_db"], 3), "cosine": round(want["cosine"], 6),
                    "top1_agreement": round(want["top1_agreement"], 6)}  # fmt: skip
    exact = sensitivity_compare([ref[:, 0]], [ref[:, 0]])
    assert exact["snr_db"] == 200.0  # tune's cap was 999 before the definitions were one


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="shape"):
        metrics.compare([np.zeros((2, 3))], [np.zeros((2, 4))], classifier=False)
    with pytest.raises(ValueError, match="outputs"):
        metrics.compare([np.zeros((2, 3))], [np.zeros((2, 3)), np.zeros((2, 3))], classifier=False)


def test_accuracy_counts_every_sample_and_refuses_missing_labels() -> None:
    """Against the truth every sample counts, a near-tie too (top-1 agreement would leave it out)."""
    out = np.array([[0.50, 0.49, 0.0], [0.0, 9.0, 0.0]])  # sample 0 is no clear decision
    assert metrics.top1_counted(out) == 1
    assert metrics.accuracy(out, np.array([0, 1])) == 1.0 and metrics.accuracy(out, np.array([1, 1])) == 0.5
    with pytest.raises(ValueError, match="2 samples, 1 labels"):
        metrics.accuracy(out, np.array([0]))
