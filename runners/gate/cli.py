"""``mpk gate``, ``mpk history`` and ``mpk report``. Thin: parse flags, call one library function, print.

Gate exit codes: 0 every check passed; 1 a budget failed, a regression was
found or an artifact failed to run; 2 usage error (bad flag, unreadable,
malformed or self-contradicting results/budgets, unknown budget key, a rule
that names no cell); 3 inconclusive (nothing failed, some interval straddles
its budget or has too few samples, or nothing was gated); 4 infrastructure
error (a cell has no result because its device/runner died, or the run is
incomplete, and nothing failed).
"""

from __future__ import annotations

from pathlib import Path

import click

_VERDICT_COLOR = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "magenta"}


def _echo_outcome(outcome) -> None:
    for w in outcome.warnings:
        click.echo(click.style("warning: ", fg="yellow") + w, err=True)
    for c in outcome.checks:
        tag = "EMU " if c.emulated else ""
        word = click.style(f"{c.verdict.upper():<12s}", fg=_VERDICT_COLOR[c.verdict])
        click.echo(f"  {word} {tag}{c.name}: {c.message}")
    for n in outcome.notes:
        click.echo(f"  note: {n}")
    if outcome.recorded_run is not None:
        click.echo(
            f"history: recorded run #{outcome.recorded_run} ({'accepted' if outcome.accepted else 'not accepted'})"
        )
    for name, path in outcome.report_paths.items():
        if name != "html":
            click.echo(f"report ({name}): {path}")
    click.echo(click.style(outcome.summary, fg=_VERDICT_COLOR[outcome.verdict], bold=True))
    if "html" in outcome.report_paths:
        click.echo(f"HTML report: {outcome.report_paths['html']}")


@click.command("gate")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--budgets", type=click.Path(dir_okay=False, path_type=Path), help="devices.yaml holding a budgets: list."
)
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), help="Compare with this results file.")
@click.option(
    "--history",
    "use_history",
    is_flag=True,
    help="Compare with the last accepted run in the history store, and record this run.",
)
@click.option(
    "--db",
    "db_url",
    help="History URL: sqlite:///PATH or postgresql://... [default: $MPK_HISTORY_DB or sqlite:///.mpk/history.sqlite]",
)
@click.option(
    "--accept/--no-accept",
    default=None,
    help="Mark the recorded run as a baseline. Default: accept when the gate passes.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.{json,md,html} and junit.xml here.",
)
@click.option(
    "--until-conclusive",
    is_flag=True,
    help="Re-measure inconclusive cells with more iterations until each has a verdict.",
)
@click.option(
    "--devices",
    "devices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="devices.yaml for --until-conclusive [default: --budgets].",
)
@click.option(
    "--time-cap",
    "time_cap_s",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds --until-conclusive may spend.",
)
@click.option("--max-rounds", type=click.IntRange(1, 20), default=5, show_default=True)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="Regression significance level (Mann-Whitney U).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, min_open=True),
    default=0.05,
    show_default=True,
    help="Regression: smallest median slowdown that fails (0.05 = 5%).",
)
@click.option(
    "--allow-unmatched-budgets",
    is_flag=True,
    help="A budget rule that names no cell of this run is a warning, not an error (exit 2).",
)
@click.option("--force", is_flag=True, help="Replace a --report folder holding files mpk did not write.")
@click.pass_context
def gate(
    ctx: click.Context,
    results: Path,
    budgets: Path | None,
    baseline: Path | None,
    use_history: bool,
    db_url: str | None,
    accept: bool | None,
    report_dir: Path | None,
    until_conclusive: bool,
    devices_file: Path | None,
    time_cap_s: float,
    max_rounds: int,
    alpha: float,
    threshold: float,
    allow_unmatched_budgets: bool,
    force: bool,
) -> None:
    """Pass or fail RESULTS (a results.json from mpk bench) against budgets and history.

    Exit codes: 0 pass, 1 budget failed or regression, 2 usage error (also: an inconsistent results file,
    a budget rule that names no cell), 3 inconclusive (also: nothing was gated), 4 infrastructure error
    (also: an incomplete run).
    """
    from runners.gate import GateConfig, run_gate

    config = GateConfig(results=results, budgets=budgets, baseline=baseline, history=use_history, db_url=db_url,
                        accept=accept, report_dir=report_dir, force=force, until_conclusive=until_conclusive,
                        devices=devices_file, time_cap_s=time_cap_s, max_rounds=max_rounds, alpha=alpha,
                        threshold=threshold, allow_unmatched_budgets=allow_unmatched_budgets)  # fmt: skip
    outcome = run_gate(config, log=lambda m: click.echo(m, err=True))
    _echo_outcome(outcome)
    ctx.exit(outcome.exit_code)


@click.command("history")
@click.option("--device", required=True, help="Device id (as listed in devices.yaml, or the device that ran it).")
@click.option("--artifact", required=True, help="Artifact id, e.g. executorch-int8.")
@click.option("--db", "db_url", help="History URL [default: $MPK_HISTORY_DB or sqlite:///.mpk/history.sqlite].")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--emulated/--real", default=None, help="Only emulated or only real-device runs [default: both].")
def history(device: str, artifact: str, db_url: str | None, limit: int, emulated: bool | None) -> None:
    """Show the stored trend for a device and artifact: date, git revision, p50, p90, peak memory, accepted."""
    from runners.gate.history import HistoryStore

    with HistoryStore.open(db_url) as store:
        points = store.trend(device, artifact, limit, emulated=emulated)
    if not points:
        click.echo(f"no recorded runs of {artifact} on {device}")
        return
    head = f"{'date (UTC)':<21} {'git':<12} {'p50 ms':>9} {'p90 ms':>9} {'peak MB':>8}  accepted  kind"
    click.echo(head)
    for p in points:

        def num(v: float | None, w: int, d: int) -> str:
            return f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}"

        click.echo(
            f"{p.created_utc:<21} {(p.git_revision or '-')[:12]:<12} {num(p.p50_ms, 9, 3)} {num(p.p90_ms, 9, 3)} "
            f"{num(p.peak_mem_mb, 8, 1)}  {'yes' if p.accepted else 'no':<8}  {'emulated' if p.emulated else 'real'}"
        )


@click.command("report")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--budgets",
    type=click.Path(dir_okay=False, path_type=Path),
    help="devices.yaml with budgets to show next to the numbers.",
)
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), help="Results file to compare with.")
@click.option("--force", is_flag=True, help="Replace an --out holding files mpk did not write (kept as OUT.prev).")
@click.pass_context
def report(ctx: click.Context, results: Path, out_dir: Path, budgets: Path | None, baseline: Path | None,
           force: bool) -> None:  # fmt: skip
    """Write report.json, report.md, junit.xml and report.html from RESULTS into OUT.

    OUT is written whole or not at all (the previous one is kept as OUT.prev). Exits 0 once the reports
    are written, whatever the verdict (use mpk gate to gate); 2 for an unreadable or inconsistent RESULTS.
    """
    from runners.gate import ReportConfig, run_report

    outcome = run_report(ReportConfig(results=results, out=out_dir, budgets=budgets, baseline=baseline, force=force))
    for w in outcome.gate.warnings:
        click.echo(click.style("warning: ", fg="yellow") + w, err=True)
    for name, path in outcome.gate.report_paths.items():
        click.echo(f"{name}: {path}")
    if outcome.gate.previous_report is not None:
        click.echo(f"previous contents of {out_dir} kept in {outcome.gate.previous_report}")
    click.echo(outcome.gate.summary)
    ctx.exit(outcome.exit_code)
