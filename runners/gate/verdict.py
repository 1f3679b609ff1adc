"""Checks: one budgeted metric of one cell against its limit, with the measurement's uncertainty.

A latency percentile is an estimate from a finite sample, so the gate compares
its 95% confidence interval, not the point value, with the budget:

* pass          the whole interval is at or under the budget (upper bound <= budget);
* fail          the whole interval is over it (lower bound > budget);
* inconclusive  the interval straddles the budget: measure more (``--until-conclusive``).

Example: p90 = 24.1 ms with CI [23.2, 25.3] ms against a 25 ms budget is
inconclusive; with CI [23.2, 24.8] ms it passes.

Single-valued metrics (load time, first inference, peak memory, size, accuracy)
are compared directly: their interval is the point itself.

Exit codes of the gate (:func:`exit_code`), in this order of precedence:

* 1  a budget check failed, a regression was found, or an artifact failed to
     run (an artifact that cannot run must not pass a gate);
* 4  nothing failed, but a cell has no result at all because the device,
     transport or runner died (infrastructure: retry, the model is not to blame);
* 3  nothing failed or broke, but some check is inconclusive;
* 0  every check passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mpk.errors import EXIT_CHECK_FAILED, EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_OK
from runners.gate.budgets import BudgetRule, ResolvedBudget, resolve
from runners.stats import CONFIDENCE, LatencyStats, quantile_ci

Verdict = Literal["pass", "fail", "inconclusive", "error"]

#: how each metric is shown, and its unit
UNITS: dict[str, str] = {
    "p50_ms": "ms",
    "p90_ms": "ms",
    "p99_ms": "ms",
    "load_ms": "ms",
    "first_inference_ms": "ms",
    "peak_mem_mb": "MB",
    "size_mb": "MB",
    "accuracy.top1_agreement_min": "",
    "accuracy.cosine_min": "",
    "accuracy.snr_db_min": "dB",
    "regression": "",
    "cell_ran": "",
}


@dataclass(frozen=True)
class Check:
    """One line of the verdict. ``interval`` is the 95% CI (or (v, v) for a single value)."""

    name: str
    device_id: str
    ran_on: str
    emulated: bool
    artifact_id: str
    metric: str
    budget: float | None
    estimate: float | None
    interval: tuple[float, float] | None
    verdict: Verdict
    message: str
    #: "max" (estimate must stay under budget) or "min" (accuracy floors)
    direction: Literal["max", "min"] = "max"
    rule: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device_id": self.device_id,
            "ran_on": self.ran_on,
            "emulated": self.emulated,
            "artifact_id": self.artifact_id,
            "metric": self.metric,
            "unit": UNITS.get(self.metric, ""),
            "direction": self.direction,
            "budget": self.budget,
            "actual": self.estimate,
            "interval": list(self.interval) if self.interval else None,
            "verdict": self.verdict,
            "message": self.message,
            "rule": self.rule,
            **({"extra": self.extra} if self.extra else {}),
        }


# ---- reading cells ---------------------------------------------------------------------------


def cell_key(cell: dict[str, Any]) -> str:
    return f"{cell.get('device_id')}/{cell.get('artifact_id')}"


def cell_samples(cell: dict[str, Any]) -> np.ndarray:
    res = cell.get("result") or {}
    return np.asarray(res.get("samples_ms") or [], dtype=np.float64)


def cell_stats(cell: dict[str, Any]) -> LatencyStats | None:
    """Stats recomputed from the raw samples (they travel with the result), else the stored ones."""
    samples = cell_samples(cell)
    if samples.size:
        return LatencyStats.from_samples(samples)
    st = (cell.get("result") or {}).get("stats")
    return LatencyStats.from_dict(st) if st else None


def model_name(results: dict[str, Any]) -> str | None:
    m = (results.get("manifest") or {}).get("model")
    if isinstance(m, dict):
        return m.get("name")
    return m


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    # below 1 keep significant digits: a cosine of 0.99996 must not print as "1"
    s = f"{v:.6g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{s} {unit}".rstrip()


def is_unsupported(cell: dict[str, Any]) -> bool:
    """The runner could not run this backend at all (e.g. CoreML off macOS): a capability, not a failure.

    Read from the runner's error kind ``unsupported``; the bench writes it as
    ``"unsupported: ..."`` in the cell's error, or a ``result: null`` cell whose
    error says the runner "cannot run" the backend.
    """
    res = cell.get("result") or {}
    if ((res.get("error") or {}).get("kind")) == "unsupported":
        return True
    err = str(cell.get("error") or "")
    return err.startswith("unsupported:") or (not res and "cannot run" in err)


def _interval_verdict(lo: float, hi: float, budget: float, direction: str) -> Verdict:
    if direction == "max":
        if hi <= budget:
            return "pass"
        return "fail" if lo > budget else "inconclusive"
    if lo >= budget:
        return "pass"
    return "fail" if hi < budget else "inconclusive"


def _latency_interval(cell: dict[str, Any], metric: str) -> tuple[float, tuple[float, float], int] | None:
    stats = cell_stats(cell)
    if stats is None:
        return None
    if metric == "p50_ms":
        return stats.p50_ms, tuple(stats.p50_ci_ms), stats.n  # type: ignore[return-value]
    if metric == "p90_ms":
        return stats.p90_ms, tuple(stats.p90_ci_ms), stats.n  # type: ignore[return-value]
    samples = np.sort(cell_samples(cell))
    if samples.size == 0:  # stored stats only: no CI for p99 without samples, so be honest and wide
        return stats.p99_ms, (stats.min_ms, stats.max_ms), stats.n
    return stats.p99_ms, quantile_ci(samples, 0.99, CONFIDENCE), stats.n


def _single_value(cell: dict[str, Any], metric: str, sizes: dict[str, int]) -> float | None:
    res = cell.get("result") or {}
    if metric in ("load_ms", "first_inference_ms"):
        return res.get(metric)
    if metric == "peak_mem_mb":
        return (res.get("memory") or {}).get("peak_rss_mb")
    if metric == "size_mb":
        b = sizes.get(str(cell.get("artifact_id")))
        return None if b is None else b / 2**20
    if metric.startswith("accuracy."):
        key = metric.split(".", 1)[1].removesuffix("_min")
        return (res.get("accuracy") or {}).get(key)
    raise KeyError(metric)


def _unmeasured(
    name: str,
    metric: str,
    rb: Any,
    base: dict[str, Any],
    message: str,
    direction: Literal["max", "min"] = "max",
) -> Check:
    """A budget whose metric is missing from the result: inconclusive, because it must never pass silently."""
    return Check(
        name=name,
        metric=metric,
        budget=rb.limit,
        estimate=None,
        interval=None,
        verdict="inconclusive",
        direction=direction,
        rule=rb.rule.label(),
        message=message,
        **base,
    )


def check_cell(
    cell: dict[str, Any], budgets: dict[str, ResolvedBudget], *, sizes: dict[str, int] | None = None
) -> list[Check]:
    """Every budgeted metric of one cell. A cell that did not run yields one 'cell_ran' check."""
    sizes = sizes or {}
    dev, art = str(cell.get("device_id")), str(cell.get("artifact_id"))
    base = {
        "device_id": dev,
        "ran_on": str(cell.get("ran_on") or dev),
        "emulated": bool(cell.get("emulated")),
        "artifact_id": art,
    }
    status = cell.get("status")
    if not budgets:
        return []
    if status == "skipped":
        reason = str(cell.get("error") or "skipped")
        if reason.startswith("not applicable:"):
            return []  # this runner has no such runtime at all (CoreML on Android): nothing to gate
        # A budgeted cell that was not measured (an absent phone, no fallback) must never pass silently.
        return [
            Check(
                name=f"{dev}/{art} measured",
                metric="measured",
                budget=None,
                estimate=None,
                interval=None,
                verdict="inconclusive",
                message=f"not measured: {reason}",
                **base,
            )
        ]
    if status != "ok":
        if is_unsupported(cell):
            return []  # reported as a warning by check_results: it could not be measured here at all
        res = cell.get("result")
        err = cell.get("error") or ((res or {}).get("error") or {}).get("message") or "unknown error"
        # no runner result at all: the device/transport/runner died, not the artifact
        infra = res is None
        verdict: Verdict = "error" if infra else "fail"
        what = "infrastructure error, no result" if infra else "the artifact failed to run"
        return [
            Check(
                name=f"{dev}/{art} cell ran",
                metric="cell_ran",
                budget=None,
                estimate=None,
                interval=None,
                verdict=verdict,
                message=f"{what}: {err}",
                **base,
            )
        ]
    out: list[Check] = []
    for metric, rb in budgets.items():
        unit = UNITS.get(metric, "")
        direction: Literal["max", "min"] = "min" if metric.startswith("accuracy.") else "max"
        name = f"{dev}/{art} {metric}"
        if metric in ("p50_ms", "p90_ms", "p99_ms"):
            got = _latency_interval(cell, metric)
            if got is None:
                out.append(_unmeasured(name, metric, rb, base, "no latency samples in the result"))
                continue
            est, (lo, hi), n = got
            v = _interval_verdict(lo, hi, rb.limit, direction)
            word = {"pass": "within", "fail": "over", "inconclusive": "straddles"}[v]
            msg = (
                f"{metric[:-3]} {_fmt(est, unit)}, {int(CONFIDENCE * 100)}% CI [{_fmt(lo)}, {_fmt(hi, unit)}] "
                f"(n={n}) {word} budget {_fmt(rb.limit, unit)}"
            )
            out.append(
                Check(
                    name=name,
                    metric=metric,
                    budget=rb.limit,
                    estimate=est,
                    interval=(lo, hi),
                    verdict=v,
                    message=msg,
                    rule=rb.rule.label(),
                    extra={"n": n},
                    **base,
                )
            )
            continue
        value = _single_value(cell, metric, sizes)
        if value is None:
            out.append(_unmeasured(name, metric, rb, base, f"{metric} was not measured for this cell", direction))
            continue
        v = _interval_verdict(value, value, rb.limit, direction)
        cmp = ("<=" if v == "pass" else ">") if direction == "max" else (">=" if v == "pass" else "<")
        label = "floor" if direction == "min" else "budget"
        out.append(
            Check(
                name=name,
                metric=metric,
                budget=rb.limit,
                estimate=float(value),
                interval=(float(value), float(value)),
                verdict=v,
                direction=direction,
                message=f"{metric.removeprefix('accuracy.').removesuffix('_min')} {_fmt(value, unit)} {cmp} "
                f"{label} {_fmt(rb.limit, unit)}",
                rule=rb.rule.label(),
                **base,
            )
        )
    return out


def check_results(
    results: dict[str, Any], rules: list[BudgetRule], *, sizes: dict[str, int] | None = None
) -> tuple[list[Check], list[str]]:
    """All budget checks of a results file, plus warnings (rules that matched no cell).

    A rule that matches nothing is reported, because a misspelt device id in a
    budget would otherwise switch that budget off without a word.
    """
    model = model_name(results)
    checks: list[Check] = []
    used: set[int] = set()
    unsupported: list[str] = []
    for cell in results.get("cells", []):
        emulated = bool(cell.get("emulated"))
        resolved = resolve(
            rules,
            device=str(cell.get("device_id")),
            artifact=str(cell.get("artifact_id")),
            model=model,
            emulated=emulated,
        )
        for rb in resolved.values():
            used.add(rb.rule.index)
        for r in rules:
            if r.applies(
                device=str(cell.get("device_id")), artifact=str(cell.get("artifact_id")), model=model, emulated=emulated
            ):
                used.add(r.index)
        checks.extend(check_cell(cell, resolved, sizes=sizes))
        if resolved and cell.get("status") != "ok" and is_unsupported(cell):
            unsupported.append(
                f"{cell_key(cell)} could not be measured on {cell.get('ran_on') or cell.get('device_id')} "
                f"({cell.get('error')}); its budgets are not checked"
            )
    warnings = unsupported + [f"{r.label()} matched no cell in the results" for r in rules if r.index not in used]
    return checks, warnings


def overall(checks: Iterable[Check]) -> Verdict:
    vs = {c.verdict for c in checks}
    for v in ("fail", "error", "inconclusive"):
        if v in vs:
            return v  # type: ignore[return-value]
    return "pass"


def exit_code(checks: Iterable[Check]) -> int:
    """The documented gate exit code for a list of checks (see the module docstring)."""
    return {"fail": EXIT_CHECK_FAILED, "error": EXIT_INFRA, "inconclusive": EXIT_INCONCLUSIVE, "pass": EXIT_OK}[
        overall(checks)
    ]


def summary_line(checks: list[Check]) -> str:
    """``FAIL: 2 failed, 1 inconclusive, 9 passed (12 checks)``: the line CI logs show first."""
    counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("fail", "error", "inconclusive", "pass")}
    word = {"fail": "FAIL", "error": "ERROR", "inconclusive": "INCONCLUSIVE", "pass": "PASS"}[overall(checks)]
    parts = [
        f"{counts['fail']} failed" if counts["fail"] else "",
        f"{counts['error']} infrastructure error(s)" if counts["error"] else "",
        f"{counts['inconclusive']} inconclusive" if counts["inconclusive"] else "",
        f"{counts['pass']} passed",
    ]
    if not checks:
        return "PASS: no budget or regression check applied (nothing was gated)"
    return f"{word}: {', '.join(p for p in parts if p)} ({len(checks)} checks)"
