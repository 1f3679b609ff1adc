"""``--until-conclusive``: measure inconclusive cells again until their interval clears the budget.

A percentile's confidence interval narrows roughly with 1/sqrt(n): a p90 CI
of [23.2, 25.3] ms from 100 samples straddling a 25 ms budget is about half
as wide after 400. Each round doubles the samples of every cell that still has
an inconclusive latency check (same device, same artifact, same settings), and
stops when every check is conclusive, after ``max_rounds``, or when the next
round would start after ``time_cap_s``. New samples are appended to the old
ones and the statistics recomputed from all of them, in one place
(:class:`runners.stats.LatencyStats`).

The measurement is a function you can pass in (``measure=``), so tests and
other callers (``mpk bench --until-conclusive``) choose how a cell is run::

    measure(cell: dict, iterations: int) -> artifact_result dict (runner_result schema)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from mpk.errors import RunnerError, UsageError
from runners.gate.budgets import BudgetRule
from runners.gate.verdict import cell_key, check_results
from runners.matrix import run_cell
from runners.stats import LatencyStats

Measure = Callable[[dict[str, Any], int], dict[str, Any]]

LATENCY_METRICS = ("p50_ms", "p90_ms", "p99_ms")


def merge_samples(cell: dict[str, Any], new_result: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cell`` whose result holds old + new samples and stats recomputed from them."""
    if new_result.get("status", "ok") != "ok":
        err = (new_result.get("error") or {}).get("message", "unknown error")
        raise RunnerError(f"re-measuring {cell_key(cell)} failed: {err}")
    if new_result.get("id") not in (None, cell.get("artifact_id")):
        raise RunnerError(f"re-measuring {cell_key(cell)} returned artifact {new_result.get('id')!r}")
    out = copy.deepcopy(cell)
    res = out.setdefault("result", {})
    samples = list(res.get("samples_ms") or []) + [float(v) for v in new_result.get("samples_ms") or []]
    res["samples_ms"] = samples
    res["iterations"] = len(samples)
    res["stats"] = LatencyStats.from_samples(samples).to_dict()
    # peak memory over both sessions is the larger peak; load/first-inference keep the first session's values
    new_mem, old_mem = new_result.get("memory"), res.get("memory")
    if new_mem and old_mem and new_mem.get("peak_rss_mb", 0) > old_mem.get("peak_rss_mb", 0):
        res["memory"] = new_mem
    return out


def inconclusive_cells(results: dict[str, Any], rules: list[BudgetRule], sizes: dict[str, int] | None) -> list[int]:
    """Indexes of cells with an inconclusive latency check (the only kind more samples can settle)."""
    checks, _ = check_results(results, rules, sizes=sizes)
    keys = {(c.device_id, c.artifact_id) for c in checks if c.verdict == "inconclusive" and c.metric in LATENCY_METRICS}
    return [
        i
        for i, cell in enumerate(results.get("cells", []))
        if (str(cell.get("device_id")), str(cell.get("artifact_id"))) in keys
        and (cell.get("result") or {}).get("samples_ms")
    ]


def remeasure_inconclusive(
    results: dict[str, Any],
    budgets: list[BudgetRule],
    *,
    manifest: Any = None,
    devices_config: Any = None,
    time_cap_s: float = 600.0,
    max_rounds: int = 5,
    measure: Measure | None = None,
    sizes: dict[str, int] | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """A new results dict where inconclusive cells carry more samples (the input is not modified).

    ``measure`` defaults to the bench's ``runners.matrix.run_cell`` bound to
    ``manifest`` and ``devices_config``.
    """
    if max_rounds < 1 or time_cap_s <= 0:
        raise UsageError("--until-conclusive needs max rounds >= 1 and a positive time cap")
    if measure is None:
        measure = default_measure(manifest, devices_config)
    say = log or (lambda _m: None)
    out = copy.deepcopy(results)
    start = clock()
    for rnd in range(1, max_rounds + 1):
        todo = inconclusive_cells(out, budgets, sizes)
        if not todo:
            break
        if clock() - start >= time_cap_s:
            say(f"until-conclusive: time cap {time_cap_s:g}s reached with {len(todo)} cell(s) still inconclusive")
            break
        for i in todo:
            cell = out["cells"][i]
            more = max(len(cell["result"]["samples_ms"]), 10)  # doubling: the CI width roughly drops by 1/sqrt(2)
            say(f"until-conclusive: round {rnd}: {cell_key(cell)} +{more} iterations")
            out["cells"][i] = merge_samples(cell, measure(cell, more))
            if clock() - start >= time_cap_s:
                break
    return out


def default_measure(manifest: Any, devices_config: Any) -> Measure:
    """Bind :func:`runners.matrix.run_cell` (the bench's one-cell runner) to a manifest and devices config."""
    if manifest is None or devices_config is None:
        raise UsageError("--until-conclusive needs the manifest and devices.yaml the results came from")

    def measure(cell: dict[str, Any], iterations: int) -> dict[str, Any]:
        new_cell = run_cell(
            manifest=manifest,
            devices=devices_config,
            device_id=cell["device_id"],
            artifact_id=cell["artifact_id"],
            iterations=iterations,
            settings=cell.get("settings"),
        )
        return new_cell.get("result") or {
            "status": "error",
            "error": {"kind": "other", "message": new_cell.get("error")},
        }

    return measure
