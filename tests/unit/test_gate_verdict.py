"""Checks and exit codes from generated (seeded) samples through the real stats code."""

from __future__ import annotations

import pytest

from mpk.errors import EXIT_CHECK_FAILED, EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_OK, ConfigError
from runners.gate import evaluate
from runners.gate.budgets import parse_budgets
from runners.gate.verdict import exit_code
from tests.gate_factory import cell, results, samples


def rules(*raw: dict):
    r, problems = parse_budgets(list(raw))
    assert problems == []
    return r


def test_interval_decides_pass_fail_inconclusive() -> None:
    lat = samples(20.0, 200, seed=1)  # p90 ~ 21.3 ms, CI about +-0.3
    doc = results([cell("pixel-7", "onnx-fp32", lat)])
    by_budget = {b: evaluate(doc, rules({"p90_ms": b})).checks[0] for b in (25.0, 15.0)}
    assert by_budget[25.0].verdict == "pass" and by_budget[15.0].verdict == "fail"
    c = by_budget[15.0]
    lo, hi = c.interval
    assert lo <= c.estimate <= hi and lo > 15.0
    straddle = evaluate(doc, rules({"p90_ms": round((lo + hi) / 2, 3)})).checks[0]
    assert straddle.verdict == "inconclusive" and "straddles" in straddle.message


def test_p99_uses_distribution_free_interval_on_raw_samples() -> None:
    lat = samples(20.0, 1000, seed=2)
    check = evaluate(results([cell("pixel-7", "onnx-fp32", lat)]), rules({"p99_ms": 100})).checks[0]
    lo, hi = check.interval
    assert check.verdict == "pass" and lo <= check.estimate <= hi < max(lat)


def test_too_few_samples_for_a_percentile_ci_is_inconclusive_with_the_minimum_stated() -> None:
    """3 samples "bound" p90 by [min, max], an interval that holds the true p90 only 27% of the time: even a
    budget 10x over every sample must not pass on them."""
    few = evaluate(results([cell("pixel-7", "onnx-fp32", [5.0, 5.1, 5.2])]), rules({"p90_ms": 50}))
    (check,) = few.checks
    assert check.verdict == "inconclusive" and few.exit_code == EXIT_INCONCLUSIVE
    assert "needs at least 36 samples" in check.message and "from 3 sample(s)" in check.message
    for metric, need in (("p50_ms", 6), ("p99_ms", 368)):
        lat = samples(5.0, need - 1, seed=7)
        (c,) = evaluate(results([cell("pixel-7", "onnx-fp32", lat)]), rules({metric: 50})).checks
        assert c.verdict == "inconclusive" and f"at least {need} samples" in c.message
        lat = samples(5.0, need, seed=7)
        (c,) = evaluate(results([cell("pixel-7", "onnx-fp32", lat)]), rules({metric: 50})).checks
        assert c.verdict == "pass"


def test_single_valued_metrics_and_accuracy_floor() -> None:
    doc = results([cell("pixel-7", "onnx-int8", samples(10, 50, 3), peak_mb=150.0, top1=0.95)])
    out = evaluate(doc, rules({"peak_mem_mb": 100, "load_ms": 50, "accuracy": {"top1_agreement_min": 0.98}}), sizes={})
    v = {c.metric: c.verdict for c in out.checks}
    assert v == {"load_ms": "pass", "peak_mem_mb": "fail", "accuracy.top1_agreement_min": "fail"}
    assert out.exit_code == EXIT_CHECK_FAILED


def test_size_from_manifest_and_unmeasured_budget_is_not_a_pass() -> None:
    doc = results([cell("pixel-7", "onnx-int8", samples(10, 50, 3))])
    assert evaluate(doc, rules({"size_mb": 4}), sizes={"onnx-int8": 5 * 2**20}).checks[0].verdict == "fail"
    missing = evaluate(doc, rules({"size_mb": 4}), sizes={}).checks[0]
    assert missing.verdict == "inconclusive" and "not measured" in missing.message


def test_failed_artifact_fails_and_dead_device_is_infra() -> None:
    broken = cell("pixel-7", "executorch-int8", outcome="failed", error_kind="inference")
    dead = cell("pixel-7", "onnx-fp32", outcome="infra_error", error="device failed: adb offline")
    r = rules({"p90_ms": 100})
    assert evaluate(results([broken]), r).exit_code == EXIT_CHECK_FAILED
    assert evaluate(results([dead]), r).exit_code == EXIT_INFRA
    # a real failure outranks an infrastructure error
    assert evaluate(results([broken, dead]), r).exit_code == EXIT_CHECK_FAILED


def test_unsupported_backend_is_warned_not_failed() -> None:
    coreml = cell("pixel-7", "coreml-fp16", outcome="unsupported")
    ok = cell("pixel-7", "onnx-fp32", samples(10, 100, 4))
    out = evaluate(results([coreml, ok]), rules({"p90_ms": 100}))
    assert out.exit_code == EXIT_OK and any("coreml-fp16 could not be measured" in w for w in out.warnings)


def test_emulated_cells_only_gated_by_emulated_rules() -> None:
    doc = results([cell("pixel-7", "onnx-fp32", samples(50, 100, 5), emulated=True)])
    phone_only = evaluate(doc, rules({"p90_ms": 10}))  # a phone budget says nothing about the host CPU
    assert phone_only.checks == [] and phone_only.exit_code == EXIT_INCONCLUSIVE  # ... and nothing gated never passes
    assert "gated nothing" in phone_only.warnings[0]
    out = evaluate(doc, rules({"p90_ms": 10}, {"emulated": True, "p90_ms": 100}))
    assert [(c.emulated, c.verdict, c.budget) for c in out.checks] == [(True, "pass", 100.0)]
    assert any("emulated" in n and "Test CPU" in n for n in out.notes)


def test_rule_matching_no_cell_is_refused_unless_allowed() -> None:
    """A misspelt device id would switch its budget off: exit 2 naming the rule and the nearest device."""
    doc = results([cell("pixel-7", "onnx-fp32", samples(10, 50, 6))])
    typo = rules({"device": "pixle-7", "p50_ms": 5}, {"artifact": "onnx-fp23", "p50_ms": 5}, {"p90_ms": 100})
    with pytest.raises(ConfigError) as e:
        evaluate(doc, typo)
    assert e.value.exit_code == 2
    assert "budgets[0]" in e.value.message and "did you mean 'pixel-7'" in e.value.message
    assert "budgets[1]" in e.value.message and "did you mean 'onnx-fp32'" in e.value.message
    out = evaluate(doc, typo, allow_unmatched_budgets=True)
    assert out.exit_code == EXIT_OK and sum("names no cell" in w for w in out.warnings) == 2


def test_exit_code_precedence() -> None:
    doc = results([cell("pixel-7", "onnx-fp32", samples(20, 200, 1))])
    checks = evaluate(doc, rules({"p90_ms": 25})).checks
    assert exit_code(checks) == EXIT_OK
    mid = sum(checks[0].interval) / 2
    inc = evaluate(doc, rules({"p90_ms": mid})).checks
    assert {c.verdict for c in inc} == {"inconclusive"} and exit_code(inc) == EXIT_INCONCLUSIVE


def test_skipped_cell_with_a_budget_is_inconclusive_not_a_silent_pass() -> None:
    """An absent phone (no fallback) leaves its cells skipped: a budget that applies to them was not met, nor
    missed; the gate must say so rather than pass on nothing."""
    from runners.gate.budgets import parse_budgets
    from runners.gate.verdict import check_results, exit_code
    from tests.gate_factory import cell, results

    rules, problems = parse_budgets([{"device": "pixel-7", "p90_ms": 20}], "budgets")
    assert problems == []
    doc = results([cell("pixel-7", "executorch-int8", outcome="skipped", error="device absent")])
    checks, _ = check_results(doc, rules, sizes={})
    assert [c.verdict for c in checks] == ["inconclusive"]
    assert "not measured: device absent" in checks[0].message
    assert exit_code(checks) == 3


def test_not_applicable_cell_is_not_gated() -> None:
    """CoreML on an Android runner cannot run at all: that is not a failure and not inconclusive."""
    from runners.gate.budgets import parse_budgets
    from runners.gate.verdict import check_results, exit_code
    from tests.gate_factory import cell, results

    rules, _ = parse_budgets([{"device": "*", "emulated": "any", "p90_ms": 20}], "budgets")
    na = "the android_app runner cannot run coreml artifacts"
    doc = results([cell("pixel-7", "coreml-int8", outcome="not_applicable", error=na),
                   cell("pixel-7", "onnx-int8", samples(10, 100, 4))])  # fmt: skip
    checks, warnings = check_results(doc, rules, sizes={})
    assert [c.artifact_id for c in checks] == ["onnx-int8"] and exit_code(checks) == 0 and warnings == []


def test_nothing_gated_never_exits_0() -> None:
    """Only a not-applicable cell under a budget: no check applies, and that is not a pass."""
    doc = results([cell("pixel-7", "coreml-int8", outcome="not_applicable", error="no coreml here")])
    out = evaluate(doc, rules({"p90_ms": 20}))
    assert out.checks == [] and out.exit_code == EXIT_INCONCLUSIVE and out.summary.startswith("INCONCLUSIVE")


def test_incomplete_run_never_passes() -> None:
    lat = samples(20.0, 200, seed=1)
    doc = results([cell("pixel-7", "onnx-fp32", lat)], complete=False,
                  matrix={"devices": ["pixel-7"], "artifacts": ["onnx-fp32", "onnx-int8"]})  # fmt: skip
    out = evaluate(doc, rules({"p90_ms": 100}))
    assert out.verdict == "error" and out.exit_code == EXIT_INFRA
    assert "complete: false (1 of 2 planned" in out.checks[0].message
    assert [c.verdict for c in out.checks[1:]] == ["pass"]
    failing = evaluate(doc, rules({"p90_ms": 1}))
    assert failing.exit_code == EXIT_CHECK_FAILED  # a failed budget still outranks it


def test_onnx_int8_measured_on_a_saturating_int8_kernel_is_warned_about_not_judged() -> None:
    """ONNX int8 on an x86 CPU without VNNI (mpk/hostcpu.py): with full-range weights the bench marks the cell
    ``int8_exact: false`` and its accuracy is that CPU's, so accuracy budgets are warned about, not judged;
    latency still is. With 7-bit weights (--onnx-reduce-range) the cell is exact and judged as usual."""
    lat = samples(20.0, 200, seed=3)
    avx2 = {"int8_kernel": {"name": "avx2", "saturates": True}, "cpu_features": ["avx2", "fma"]}
    budget = rules({"device": "host", "p90_ms": 50, "accuracy": {"cosine_min": 0.999}})

    def run(exact: bool | None):
        cells = [cell("host", "onnx-int8", lat), cell("host", "executorch-int8", lat)]
        for c in cells:
            c["device"] = {**c["device"], **avx2}
            c["result"]["accuracy"]["cosine"] = 0.93  # what a saturating kernel measures
        if exact is not None:
            cells[0]["int8_exact"] = exact
        return evaluate(results(cells), budget)

    inexact = run(False)
    onnx = [c for c in inexact.checks if c.artifact_id == "onnx-int8"]
    assert [c.metric for c in onnx] == ["p90_ms"]  # the accuracy floor is not judged on this CPU's arithmetic
    et = {c.metric: c.verdict for c in inexact.checks if c.artifact_id == "executorch-int8"}
    assert et["accuracy.cosine_min"] == "fail"  # XNNPACK does not saturate: judged as measured
    (warning,) = [w for w in inexact.warnings if "saturating 16-bit pairs" in w]
    assert (
        warning.startswith("host/onnx-int8") and "accuracy.cosine_min" in warning and "--onnx-reduce-range" in warning
    )
    exact = run(True)  # 7-bit weights: this CPU computes the graph exactly
    assert {c.metric: c.verdict for c in exact.checks if c.artifact_id == "onnx-int8"}["accuracy.cosine_min"] == "fail"
    assert not [w for w in exact.warnings if "saturating" in w]
    legacy = run(None)  # a results file from before int8_exact: judged, and warned about
    assert "accuracy.cosine_min" in {c.metric for c in legacy.checks if c.artifact_id == "onnx-int8"}
    assert [w for w in legacy.warnings if "saturating 16-bit pairs" in w]
