"""The release gate: a results file, budgets and history in; checks, a verdict and an exit code out.

One library call does what ``mpk gate`` does::

    from runners.gate import run_gate
    outcome = run_gate("out/bench/results.json", budgets="devices.yaml", report_dir="out/report")
    outcome.exit_code   # 0 pass, 1 fail/regression, 3 inconclusive, 4 infrastructure

See :mod:`runners.gate.verdict` for how a check is decided and the exit-code precedence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpk.errors import UsageError

__all__ = ["GateOutcome", "artifact_sizes", "evaluate", "load_results", "run_gate"]


@dataclass
class GateOutcome:
    """Everything the gate decided, in a form every report writer reads."""

    results: dict[str, Any]
    checks: list[Any]  # list[runners.gate.verdict.Check]
    verdict: str
    exit_code: int
    summary: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rules: list[Any] = field(default_factory=list)
    results_path: Path | None = None
    budgets_path: Path | None = None
    baseline: str | None = None
    #: (device_id, artifact_id) -> list[TrendPoint] when history was used
    trends: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    recorded_run: int | None = None
    accepted: bool | None = None
    report_paths: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "checks": [c.to_dict() for c in self.checks],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "budgets": [r.to_dict() for r in self.rules],
            "baseline": self.baseline,
            "history": {"recorded_run": self.recorded_run, "accepted": self.accepted} if self.recorded_run else None,
        }


def load_results(path: Path | str) -> dict[str, Any]:
    """Read a results.json; a missing or malformed file is a usage error (exit 2), never a traceback."""
    p = Path(path)
    try:
        from runners import results as _results  # the bench's loader validates against the schema

        loader = getattr(_results, "load_results", None)
    except ImportError:
        loader = None
    if loader is not None:
        from mpk.errors import SchemaError

        try:
            return loader(p)
        except SchemaError as e:  # the gate's input is the user's file: a bad one is a usage error (exit 2)
            raise UsageError(e.message) from None
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise UsageError(f"cannot read results file {p}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise UsageError(f"{p} is not JSON: {e}") from e
    if not isinstance(doc, dict) or not str(doc.get("schema_version", "")).startswith("mpk.results/"):
        raise UsageError(f"{p} is not an mpk results file (schema_version mpk.results/1 expected)")
    if not isinstance(doc.get("cells"), list):
        raise UsageError(f"{p}: 'cells' must be a list")
    return doc


def artifact_sizes(results: dict[str, Any], results_path: Path | None) -> dict[str, int]:
    """artifact id -> size in bytes, from the manifest the results point to (empty if it is gone)."""
    mpath = (results.get("manifest") or {}).get("path")
    if not mpath:
        return {}
    candidates = [Path(mpath)]
    if results_path is not None and not Path(mpath).is_absolute():
        candidates.insert(0, results_path.parent / mpath)
    for c in candidates:
        try:
            manifest = json.loads(c.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        return {str(a["id"]): int(a["size_bytes"]) for a in manifest.get("artifacts", []) if "size_bytes" in a}
    return {}


def evaluate(
    results: dict[str, Any],
    rules: list[Any],
    *,
    sizes: dict[str, int] | None = None,
    baseline_lookup: Callable[[dict[str, Any]], Any] | None = None,
    baseline_label: str | None = None,
    alpha: float = 0.01,
    threshold: float = 0.05,
) -> GateOutcome:
    """Budget checks plus (when a baseline is given) regression checks, and the verdict. Pure: no I/O."""
    from runners.gate.regression import check_regressions
    from runners.gate.verdict import check_results, exit_code, overall, summary_line

    checks, warnings = check_results(results, rules, sizes=sizes)
    notes: list[str] = []
    if baseline_lookup is not None:
        reg, notes = check_regressions(results, baseline_lookup, alpha=alpha, threshold=threshold)
        checks = checks + reg
    emulated = [c for c in results.get("cells", []) if c.get("emulated")]
    if emulated:
        cpus = sorted({str((c.get("device") or {}).get("host_cpu") or "unknown") for c in emulated})
        notes.append(
            f"{len(emulated)} cell(s) are emulated: numbers come from the host CPU ({', '.join(cpus)}), "
            "not a phone; they are gated only by rules with emulated: true and never compared with real devices"
        )
    return GateOutcome(
        results=results,
        checks=checks,
        verdict=overall(checks),
        exit_code=exit_code(checks),
        summary=summary_line(checks),
        warnings=warnings,
        notes=notes,
        rules=list(rules),
        baseline=baseline_label,
    )


def run_gate(
    results_path: Path | str,
    *,
    budgets: Path | str | None = None,
    baseline: Path | str | None = None,
    history: bool = False,
    db_url: str | None = None,
    accept: bool | None = None,
    report_dir: Path | str | None = None,
    until_conclusive: bool = False,
    devices: Path | str | None = None,
    time_cap_s: float = 600.0,
    max_rounds: int = 5,
    measure: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    alpha: float = 0.01,
    threshold: float = 0.05,
    log: Callable[[str], None] | None = None,
) -> GateOutcome:
    """What ``mpk gate`` does. ``accept=None`` accepts the run into history when the gate passes."""
    from runners.gate.budgets import load_budgets
    from runners.gate.regression import baseline_from_results

    if baseline is not None and history:
        raise UsageError("give either --baseline or --history, not both")
    rpath = Path(results_path)
    results = load_results(rpath)
    rules = load_budgets(budgets) if budgets is not None else []
    sizes = artifact_sizes(results, rpath)
    if until_conclusive:
        from runners.gate.conclusive import remeasure_inconclusive

        manifest_path = (results.get("manifest") or {}).get("path")
        results = remeasure_inconclusive(
            results,
            rules,
            manifest=manifest_path and (rpath.parent / manifest_path),
            devices_config=devices or budgets,
            time_cap_s=time_cap_s,
            max_rounds=max_rounds,
            measure=measure,
            sizes=sizes,
            log=log,
        )

    store = None
    lookup = None
    label = None
    if baseline is not None:
        lookup = baseline_from_results(load_results(baseline), str(baseline))
        label = str(baseline)
    elif history:
        from runners.gate.history import HistoryStore

        store = HistoryStore.open(db_url)
        lookup = store.lookup()
        label = f"history {store.url} (last accepted run)"
    try:
        outcome = evaluate(
            results,
            rules,
            sizes=sizes,
            baseline_lookup=lookup,
            baseline_label=label,
            alpha=alpha,
            threshold=threshold,
        )
        outcome.results_path, outcome.budgets_path = rpath, Path(budgets) if budgets else None
        if store is not None:
            outcome.accepted = outcome.exit_code == 0 if accept is None else accept
            outcome.recorded_run = store.record(results, accepted=outcome.accepted)
            outcome.trends = collect_trends(store, results)
    finally:
        if store is not None:
            store.close()
    if report_dir is not None:
        from runners.report import write_reports

        outcome.report_paths = write_reports(outcome, Path(report_dir))
    return outcome


def collect_trends(store: Any, results: dict[str, Any], limit: int = 30) -> dict[tuple[str, str], list[Any]]:
    """History trend per cell of this run, same real/emulated kind only."""
    out: dict[tuple[str, str], list[Any]] = {}
    for c in results.get("cells", []):
        dev = str(c.get("ran_on") or c.get("device_id"))
        key = (str(c.get("device_id")), str(c.get("artifact_id")))
        pts = store.trend(dev, key[1], limit, emulated=bool(c.get("emulated")))
        if pts:
            out[key] = pts
    return out
