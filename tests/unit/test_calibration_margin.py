"""The float-fallback search's calibration check counts the sampling error of a per-pixel / per-token agreement.

SegFormer int8 on ExecuTorch met min_top1_agreement 0.95 on 16 calibration images (0.9556) and missed it on 48
evaluation images (0.9498): thousands of pixel decisions, but from 16 images, so the estimate was far less certain
than its count suggested, and the search never started. Synthetic outputs with known per-sample agreement; the
real metric code (mpk.metrics) counts them.
"""

from __future__ import annotations

import numpy as np

from packager.export.layer_errors import within_sampling_error

CLASSES, SIDE, SAMPLES = 3, 8, 16


def _segmentation(flips_per_sample: list[int]) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Per sample, one (1, C, H, W) logits output with a clear winner per pixel, and a copy with ``flips`` pixels'
    winner moved to another class."""
    rng = np.random.default_rng(0)
    ref, got = [], []
    for flips in flips_per_sample:
        win = rng.integers(0, CLASSES, size=(SIDE, SIDE))
        r = np.zeros((1, CLASSES, SIDE, SIDE))
        np.put_along_axis(r, win[None, None], 5.0, axis=1)
        moved = win.copy().reshape(-1)
        moved[:flips] = (moved[:flips] + 1) % CLASSES
        g = np.zeros_like(r)
        np.put_along_axis(g, moved.reshape(SIDE, SIDE)[None, None], 5.0, axis=1)
        ref.append([r])
        got.append([g])
    return ref, got


def test_an_agreement_met_by_less_than_its_spread_over_samples_is_a_miss() -> None:
    # half the images agree everywhere, half lose 6 of 64 pixels: 0.953 overall, but the 16 images disagree
    ref, got = _segmentation([0] * 8 + [6] * 8)
    line = within_sampling_error(ref, got, task="segmentation", minimum=0.95)
    assert line is not None and "top1_agreement 0.9531 on 16 calibration samples" in line, line
    assert "lower bound 0.92" in line, line


def test_the_same_agreement_spread_evenly_is_met() -> None:
    ref, got = _segmentation([3] * 16)  # 3 of 64 in every image: 0.953 with no spread
    assert within_sampling_error(ref, got, task="segmentation", minimum=0.95) is None


def test_a_plain_miss_and_a_clear_pass_are_left_to_the_tolerance_check() -> None:
    ref, got = _segmentation([0] * 8 + [12] * 8)  # 0.906: check() reports it
    assert within_sampling_error(ref, got, task="segmentation", minimum=0.95) is None
    ref, got = _segmentation([0] * 15 + [1])  # 0.999
    assert within_sampling_error(ref, got, task="segmentation", minimum=0.95) is None
    assert within_sampling_error(ref, got, task="segmentation", minimum=None) is None


def test_a_classifier_whose_samples_all_agree_is_unaffected() -> None:
    rng = np.random.default_rng(1)
    ref = [[np.eye(10)[rng.integers(10)][None] * 4.0] for _ in range(16)]
    assert within_sampling_error(ref, ref, task="classification", minimum=0.95) is None
