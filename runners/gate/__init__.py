"""The release gate: a results file, budgets and history in; checks, a verdict and an exit code out.

One library call does what ``mpk gate`` does; the CLI only renders its outcome::

    from runners.gate import GateConfig, run_gate
    outcome = run_gate(GateConfig(Path("out/bench/results.json"), budgets=Path("devices.yaml"),
                                  report_dir=Path("out/report")))
    outcome.exit_code   # 0 pass, 1 fail/regression, 3 inconclusive, 4 infrastructure

What the gate refuses before deciding anything (exit 2, naming the cell or rule): a results file that
contradicts itself (:mod:`runners.gate.integrity`), a budget rule that names no cell of the run (unless
``allow_unmatched_budgets``), and nothing to gate against. What never passes: an incomplete run, a run
in which no check applied. See :mod:`runners.gate.verdict` for how each check is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpk.contract import Results, read_results
from mpk.errors import ConfigError, UsageError
from mpk.outdir import OutputKind, Staged, prepare

__all__ = [
    "REPORT_OUTPUT",
    "GateConfig",
    "GateOutcome",
    "ReportConfig",
    "artifact_sizes",
    "evaluate",
    "load_results",
    "run_gate",
    "run_report",
]

#: a report folder mpk wrote (also recognised without its marker, from before the marker existed)
REPORT_OUTPUT = OutputKind(
    "report", {"report.json": "mpk.report/", "report.md": None, "report.html": None, "junit.xml": None}
)


@dataclass(frozen=True)
class GateConfig:
    """Everything ``mpk gate`` is asked to do; flags, YAML and Python callers build the same object."""

    results: Path
    budgets: Path | None = None
    baseline: Path | None = None
    history: bool = False
    db_url: str | None = None
    #: record the run as a baseline: None accepts it when the gate passes or nothing could be checked yet
    accept: bool | None = None
    report_dir: Path | None = None
    #: replace a report folder that holds files mpk did not write (they are kept in REPORT.prev)
    force: bool = False
    until_conclusive: bool = False
    devices: Path | None = None
    time_cap_s: float = 600.0
    max_rounds: int = 5
    alpha: float = 0.01
    threshold: float = 0.05
    #: a budget rule naming no cell of the run is a warning instead of an error (exit 2)
    allow_unmatched_budgets: bool = False


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
    #: where an earlier report folder was moved (REPORT.prev), when there was one
    previous_report: Path | None = None

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


def load_results(path: Path | str) -> Results:
    """Read a results file and check it agrees with itself; any problem is a usage error (exit 2)."""
    from runners.gate.integrity import check_integrity

    p = Path(path)
    results = read_results(p)
    check_integrity(results, p, what=f"results file {p}")
    return results


def artifact_sizes(results: dict[str, Any], results_path: Path | None) -> dict[str, int]:
    """artifact id -> size in bytes, from the manifest the results name (empty if it is gone or was rebuilt)."""
    from runners.gate.integrity import manifest_artifacts

    arts = manifest_artifacts(results, results_path) or {}
    return {k: int(a["size_bytes"]) for k, a in arts.items()}


def evaluate(
    results: dict[str, Any],
    rules: list[Any],
    *,
    sizes: dict[str, int] | None = None,
    baseline_lookup: Callable[[dict[str, Any]], Any] | None = None,
    baseline_label: str | None = None,
    alpha: float = 0.01,
    threshold: float = 0.05,
    allow_unmatched_budgets: bool = False,
) -> GateOutcome:
    """Budget checks plus (when a baseline is given) regression checks, and the verdict. Pure: no I/O.

    Raises a ConfigError (exit 2) for budget rules that name no cell of the run, unless
    ``allow_unmatched_budgets``: a misspelt device id must not switch its budget off without a word.
    """
    from runners.gate.integrity import planned_cells
    from runners.gate.regression import check_regressions
    from runners.gate.verdict import (
        check_results,
        completeness_check,
        exit_code,
        overall,
        summary_line,
        unmatched_rules,
    )

    unmatched = [why for _, why in unmatched_rules(results, rules)]
    if unmatched and not allow_unmatched_budgets:
        raise ConfigError("budgets", [*unmatched, "(pass --allow-unmatched-budgets if that is intended)"])
    checks, warnings = check_results(results, rules, sizes=sizes)
    warnings = unmatched + warnings
    notes: list[str] = []
    if baseline_lookup is not None:
        reg, notes = check_regressions(results, baseline_lookup, alpha=alpha, threshold=threshold)
        checks = checks + reg
    incomplete = completeness_check(results, planned_cells(results))
    if incomplete is not None:
        checks = [incomplete, *checks]
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
    config: GateConfig,
    *,
    measure: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> GateOutcome:
    """What ``mpk gate`` does; the returned outcome carries the exit code.

    ``measure`` replaces the bench's one-cell runner for ``until_conclusive`` (tests, other harnesses);
    ``log`` receives progress lines.
    """
    if config.budgets is None and config.baseline is None and not config.history:
        raise UsageError("nothing to gate against: give --budgets, --baseline or --history")
    return _gate(config, measure=measure, log=log)


def _gate(
    config: GateConfig,
    *,
    measure: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> GateOutcome:
    from runners.config import load_budgets

    if config.baseline is not None and config.history:
        raise UsageError("give either --baseline or --history, not both")
    rpath = Path(config.results)
    results = load_results(rpath)
    rules = load_budgets(config.budgets) if config.budgets is not None else []
    baseline_results = load_results(config.baseline) if config.baseline is not None else None
    # refuse an unsafe report folder before any work (re-measuring can take minutes)
    staged = None
    if config.report_dir is not None:
        staged = prepare(config.report_dir, REPORT_OUTPUT, force=config.force, flag="--report")
    try:
        outcome = _decide(config, results, rpath, rules, baseline_results, measure=measure, log=log)
        if staged is not None:
            _write_reports(outcome, staged)
    except BaseException:
        if staged is not None:
            staged.abandon()
        raise
    return outcome


def _decide(config: GateConfig, results: Results, rpath: Path, rules: list[Any], baseline_results: Results | None,
            *, measure: Any, log: Any) -> GateOutcome:  # fmt: skip
    from runners.gate.regression import baseline_from_results

    sizes = artifact_sizes(results, rpath)
    if config.until_conclusive:
        from runners.gate.conclusive import remeasure_inconclusive

        manifest_path = (results.get("manifest") or {}).get("path")
        results = remeasure_inconclusive(
            results,
            rules,
            manifest=manifest_path and (rpath.parent / manifest_path),
            devices_config=config.devices or config.budgets,
            time_cap_s=config.time_cap_s,
            max_rounds=config.max_rounds,
            measure=measure,
            sizes=sizes,
            log=log,
        )
    store = None
    lookup = None
    label = None
    if baseline_results is not None:
        lookup = baseline_from_results(baseline_results, str(config.baseline))
        label = str(config.baseline)
    elif config.history:
        from runners.gate.history import HistoryStore

        store = HistoryStore.open(config.db_url)
        lookup = store.lookup()
        label = f"history {store.url} (last accepted run)"
    try:
        outcome = evaluate(
            results,
            rules,
            sizes=sizes,
            baseline_lookup=lookup,
            baseline_label=label,
            alpha=config.alpha,
            threshold=config.threshold,
            allow_unmatched_budgets=config.allow_unmatched_budgets,
        )
        outcome.results_path, outcome.budgets_path = rpath, config.budgets
        if store is not None:
            # by default a passing run is accepted, and so is one with nothing to be checked against yet
            # (no budget, no earlier run of its kind): it is the first baseline of its kind
            default = outcome.exit_code == 0 or not outcome.checks
            outcome.accepted = default if config.accept is None else config.accept
            outcome.recorded_run = store.record(results, accepted=outcome.accepted)
            outcome.trends = collect_trends(store, results)
    finally:
        if store is not None:
            store.close()
    return outcome


def _write_reports(outcome: GateOutcome, staged: Staged) -> None:
    """Every report into the staging folder, then swapped in whole: a full disk leaves the old report intact."""
    from runners.report import write_reports

    written = write_reports(outcome, staged.staging)
    outcome.previous_report = staged.commit()
    outcome.report_paths = {name: staged.out / p.name for name, p in written.items()}


@dataclass(frozen=True)
class ReportConfig:
    """``mpk report``: reports from a results file whatever the verdict (budgets and baseline optional)."""

    results: Path
    out: Path
    budgets: Path | None = None
    baseline: Path | None = None
    force: bool = False


@dataclass
class ReportOutcome:
    gate: GateOutcome
    #: ``mpk report`` exits 0 once the reports are written; the verdict is in them (gate with ``mpk gate``)
    exit_code: int = 0


def run_report(config: ReportConfig) -> ReportOutcome:
    """Write report.json, report.md, junit.xml and report.html into ``config.out``.

    Budget rules that name no cell are warnings here (a report shows; the gate decides).
    """
    gate_config = GateConfig(config.results, budgets=config.budgets, baseline=config.baseline,
                             report_dir=config.out, force=config.force, allow_unmatched_budgets=True)  # fmt: skip
    return ReportOutcome(_gate(gate_config))


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
