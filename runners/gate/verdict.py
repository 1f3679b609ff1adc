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

from mpk.contract import Outcome
from mpk.errors import EXIT_CHECK_FAILED, EXIT_INCONCLUSIVE, EXIT_INFRA, EXIT_OK
from runners.gate.budgets import BudgetRule, ResolvedBudget, matches, resolve
from runners.stats import CONFIDENCE, LatencyStats, min_samples, quantile_ci

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
    """Stats computed here from the raw samples; None without samples (stored stats are never believed)."""
    samples = cell_samples(cell)
    return LatencyStats.from_samples(samples) if samples.size else None


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


def _interval_verdict(lo: float, hi: float, budget: float, direction: str) -> Verdict:
    if direction == "max":
        if hi <= budget:
            return "pass"
        return "fail" if lo > budget else "inconclusive"
    if lo >= budget:
        return "pass"
    return "fail" if hi < budget else "inconclusive"


#: latency budget metric -> the quantile it bounds
QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p99_ms": 0.99}


def _latency_interval(cell: dict[str, Any], metric: str) -> tuple[float, tuple[float, float], int] | None:
    """(estimate, CI, n) of a latency percentile from the cell's raw samples; None without samples."""
    stats = cell_stats(cell)
    if stats is None:
        return None
    est = {"p50_ms": stats.p50_ms, "p90_ms": stats.p90_ms, "p99_ms": stats.p99_ms}[metric]
    return est, quantile_ci(np.sort(cell_samples(cell)), QUANTILES[metric], CONFIDENCE), stats.n


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
    """Every budgeted metric of one cell, decided by its typed outcome (see :class:`mpk.contract.Outcome`)."""
    sizes = sizes or {}
    dev, art = str(cell.get("device_id")), str(cell.get("artifact_id"))
    base = {
        "device_id": dev,
        "ran_on": str(cell.get("ran_on") or dev),
        "emulated": bool(cell.get("emulated")),
        "artifact_id": art,
    }
    if not budgets:
        return []
    outcome = Outcome(cell["outcome"])
    reason = str(cell.get("error") or ((cell.get("result") or {}).get("error") or {}).get("message") or outcome)
    if outcome in (Outcome.NOT_APPLICABLE, Outcome.UNSUPPORTED):
        return []  # no runtime for this backend there: nothing to gate (unsupported is warned about by check_results)
    if outcome is Outcome.SKIPPED:
        # A budgeted cell that was not measured (an absent phone, no fallback) must never pass silently.
        return [Check(name=f"{dev}/{art} measured", metric="measured", budget=None, estimate=None, interval=None,
                      verdict="inconclusive", message=f"not measured: {reason}", **base)]  # fmt: skip
    if outcome in (Outcome.FAILED, Outcome.INFRA_ERROR):
        infra = outcome is Outcome.INFRA_ERROR  # no result: the device, transport or runner died, not the artifact
        what = "infrastructure error, no result" if infra else "the artifact failed to run"
        return [Check(name=f"{dev}/{art} cell ran", metric="cell_ran", budget=None, estimate=None, interval=None,
                      verdict="error" if infra else "fail", message=f"{what}: {reason}", **base)]  # fmt: skip
    out: list[Check] = []
    for metric, rb in budgets.items():
        if metric.startswith("accuracy.") and cell.get("int8_exact") is False:
            continue  # this CPU did not compute the artifact's arithmetic: warned about by check_results
        unit = UNITS.get(metric, "")
        direction: Literal["max", "min"] = "min" if metric.startswith("accuracy.") else "max"
        name = f"{dev}/{art} {metric}"
        if metric in QUANTILES:
            got = _latency_interval(cell, metric)
            if got is None:
                out.append(_unmeasured(name, metric, rb, base, "no raw latency samples in the result"))
                continue
            est, (lo, hi), n = got
            need = min_samples(QUANTILES[metric], CONFIDENCE)
            if n < need:
                v: Verdict = "inconclusive"
                msg = (f"{metric[:-3]} {_fmt(est, unit)} from {n} sample(s): a distribution-free "
                       f"{int(CONFIDENCE * 100)}% CI of {metric[:-3]} needs at least {need} samples "
                       f"(measure more: --iterations or --until-conclusive)")  # fmt: skip
            else:
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
                    extra={"n": n, "min_n": need},
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
    """All budget checks of a results file, plus warnings.

    Warned about: cells whose runtime was missing where they ran (``unsupported``) under a budget, ONNX int8
    cells measured on a CPU whose int8 kernel saturates (their accuracy is that CPU's, see :mod:`mpk.hostcpu`), and
    rules that name cells of this run but gated none of them because the cells were the other kind
    (a phone's rule when the phone's cells were emulated). A rule that names no cell of the run at all
    is :func:`unmatched_rules`' business: the gate refuses it unless asked not to.
    """
    model = model_name(results)
    checks: list[Check] = []
    used: set[int] = set()
    unsupported: list[str] = []
    saturated: list[str] = []
    for cell in results.get("cells", []):
        sel = {"device": str(cell.get("device_id")), "artifact": str(cell.get("artifact_id")), "model": model}
        emulated = bool(cell.get("emulated"))
        resolved = resolve(rules, emulated=emulated, **sel)
        used.update(r.index for r in rules if r.applies(emulated=emulated, **sel))
        checks.extend(check_cell(cell, resolved, sizes=sizes))
        if resolved and _saturating_int8(cell):
            saturated.append(_saturation_warning(cell, resolved))
        if resolved and cell["outcome"] == Outcome.UNSUPPORTED:
            unsupported.append(
                f"{cell_key(cell)} could not be measured on {cell.get('ran_on') or cell.get('device_id')} "
                f"({cell.get('error')}); its budgets are not checked"
            )
    unmatched = {r.index for r, _ in unmatched_rules(results, rules)}
    other_kind = [r for r in rules if r.index not in used and r.index not in unmatched]
    warnings = (
        unsupported
        + saturated
        + [
            f"{r.label()} gated nothing: it applies to {'emulated' if r.emulated else 'real'} cells and the cells it "
            f"names ran as {'real' if r.emulated else 'emulated'} ones"
            for r in other_kind
        ]
    )
    return checks, warnings


def _saturating_int8(cell: dict[str, Any]) -> bool:
    """An ONNX int8 cell measured on a CPU whose int8 kernel saturates (see runners/devicefacts.int8_facts)
    that the bench did not find exact (``int8_exact``: the artifact's weights use the full int8 range)."""
    device = cell.get("device") or {}
    return bool(
        cell.get("backend") == "onnx"
        and str(cell.get("scheme", "")).startswith("int8")
        and (device.get("int8_kernel") or {}).get("saturates")
        and cell.get("int8_exact") is not True
    )


def _saturation_warning(cell: dict[str, Any], resolved: dict[str, ResolvedBudget]) -> str:
    kernel = cell["device"]["int8_kernel"]["name"]
    cpu = cell["device"].get("host_cpu") or cell["device"].get("model")
    acc = (cell.get("result") or {}).get("accuracy") or {}
    seen = f" (cosine {acc['cosine']:.4f} there)" if isinstance(acc.get("cosine"), (int, float)) else ""
    skipped = [m for m in resolved if m.startswith("accuracy.")] if cell.get("int8_exact") is False else []
    what = f"; its accuracy budgets ({', '.join(skipped)}) are not checked" if skipped else ""
    return (
        f"{cell_key(cell)} ran on {cpu}, whose ONNX Runtime int8 kernel ({kernel}) adds byte products in saturating "
        f"16-bit pairs, and its weights use the full int8 range: the accuracy measured{seen} is that CPU's, not "
        f"what an ARM64 phone or a VNNI CPU computes from the artifact{what} (the manifest verifies the graph's "
        "exact arithmetic; package with --onnx-reduce-range to gate accuracy on such CPUs)"
    )


def unmatched_rules(results: dict[str, Any], rules: list[BudgetRule]) -> list[tuple[BudgetRule, str]]:
    """Rules whose device/artifact/model selectors name no cell of the run at all, each with a one-line why.

    Real or emulated does not count here: a phone's rule while the phone was emulated is not a typo.
    A misspelt device id is: ``budgets[2] (device=pixle-7, ...) names no cell of this run; no device
    'pixle-7'; did you mean 'pixel-7'?``.
    """
    from mpk.registry import suggest

    model = model_name(results)
    cells = results.get("cells", [])
    devices = sorted({str(c.get("device_id")) for c in cells})
    artifacts = sorted({str(c.get("artifact_id")) for c in cells})
    out = []
    for r in rules:
        if any(r.names(device=str(c.get("device_id")), artifact=str(c.get("artifact_id")), model=model) for c in cells):
            continue
        why = []
        if not any(matches(r.device, d) for d in devices):
            why.append(suggest(r.device, devices, "device").replace("unknown", "no", 1))
        if not any(matches(r.artifact, a) for a in artifacts):
            why.append(suggest(r.artifact, artifacts, "artifact").replace("unknown", "no", 1))
        if not matches(r.model, model):
            why.append(f"the results are of model {model!r}")
        out.append((r, f"{r.label()} names no cell of this run: {'; '.join(why) or 'no cell has that combination'}"))
    return out


def completeness_check(results: dict[str, Any], planned: int) -> Check | None:
    """An incomplete run (``complete: false``: interrupted, or still running) never passes: one 'error' check."""
    if results.get("complete"):
        return None
    n = len(results.get("cells", []))
    return Check(
        name="run complete",
        device_id="*",
        ran_on="*",
        emulated=False,
        artifact_id="*",
        metric="complete",
        budget=None,
        estimate=float(n),
        interval=None,
        verdict="error",
        message=f"results.json says complete: false ({n} of {planned} planned cell(s) present): the bench was "
        "interrupted or is still running; an incomplete run never passes",
    )


def overall(checks: Iterable[Check]) -> Verdict:
    """fail > error > inconclusive > pass; no check at all is inconclusive (a gate that gated nothing never passes)."""
    vs = {c.verdict for c in checks}
    if not vs:
        return "inconclusive"
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
    if not checks:
        return "INCONCLUSIVE: nothing was gated (no budget or regression check applied to any cell)"
    counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("fail", "error", "inconclusive", "pass")}
    word = {"fail": "FAIL", "error": "ERROR", "inconclusive": "INCONCLUSIVE", "pass": "PASS"}[overall(checks)]
    parts = [
        f"{counts['fail']} failed" if counts["fail"] else "",
        f"{counts['error']} infrastructure error(s)" if counts["error"] else "",
        f"{counts['inconclusive']} inconclusive" if counts["inconclusive"] else "",
        f"{counts['pass']} passed",
    ]
    return f"{word}: {', '.join(p for p in parts if p)} ({len(checks)} checks)"
