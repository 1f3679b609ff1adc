"""Checks and exit codes from generated (seeded) samples through the real stats code."""

from __future__ import annotations

from mpk.errors import EXIT_CHECK_FAILED, EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_OK
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
    lat = samples(20.0, 30, seed=2)  # 30 samples cannot pin p99: its CI reaches the max
    check = evaluate(results([cell("pixel-7", "onnx-fp32", lat)]), rules({"p99_ms": max(lat) - 0.01})).checks[0]
    assert check.interval[1] == max(lat) and check.verdict == "inconclusive"


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
    broken = cell("pixel-7", "executorch-int8", status="error", error="inference: bad op", result=None)
    broken["result"] = {
        "id": "executorch-int8",
        "backend": "executorch",
        "scheme": "int8",
        "status": "error",
        "error": {"kind": "inference", "message": "bad op"},
    }
    dead = cell("pixel-7", "onnx-fp32", status="error", error="device failed: adb offline", result=None)
    r = rules({"p90_ms": 100})
    assert evaluate(results([broken]), r).exit_code == EXIT_CHECK_FAILED
    assert evaluate(results([dead]), r).exit_code == EXIT_INFRA
    # a real failure outranks an infrastructure error
    assert evaluate(results([broken, dead]), r).exit_code == EXIT_CHECK_FAILED


def test_unsupported_backend_is_warned_not_failed() -> None:
    coreml = cell(
        "pixel-7", "coreml-fp16", status="error", error="unsupported: coreml artifacts need macOS", result=None
    )
    ok = cell("pixel-7", "onnx-fp32", samples(10, 100, 4))
    out = evaluate(results([coreml, ok]), rules({"p90_ms": 100}))
    assert out.exit_code == EXIT_OK and any("coreml-fp16 could not be measured" in w for w in out.warnings)


def test_emulated_cells_only_gated_by_emulated_rules() -> None:
    doc = results([cell("pixel-7", "onnx-fp32", samples(50, 100, 5), emulated=True)])
    assert evaluate(doc, rules({"p90_ms": 10})).checks == []  # a phone budget says nothing about the host CPU
    out = evaluate(doc, rules({"p90_ms": 10}, {"emulated": True, "p90_ms": 100}))
    assert [(c.emulated, c.verdict, c.budget) for c in out.checks] == [(True, "pass", 100.0)]
    assert any("emulated" in n and "Test CPU" in n for n in out.notes)


def test_rule_matching_nothing_is_warned() -> None:
    out = evaluate(
        results([cell("pixel-7", "onnx-fp32", samples(10, 50, 6))]), rules({"device": "pixle-7", "p50_ms": 5})
    )
    assert out.checks == [] and "matched no cell" in out.warnings[0]


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
    doc = results([cell("pixel-7", "executorch-int8", status="skipped", error="device absent", result=None)])
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
    na = "not applicable: the android_app runner cannot run coreml artifacts here"
    doc = results([cell("pixel-7", "coreml-int8", status="skipped", error=na, result=None)])
    checks, _ = check_results(doc, rules, sizes={})
    assert checks == [] and exit_code(checks) == 0
