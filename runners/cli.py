"""``mpk bench`` and ``mpk devices``. Thin: parse, build the config, call one library function, render.

Heavy imports (numpy, the matrix, rich) stay inside the command functions so
``mpk --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mpk.errors import InfraError, UsageError


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def cell_row(cell: dict[str, Any]) -> list[str]:
    """One table row: device, ran_on, emulated, artifact, p50/p90/p99, load, peak and rise MB, accuracy, status.

    Both memory figures: peak RSS is the documented definition, but in the host runner it includes the Python
    runtime (ExecuTorch's pybindings import torch), so the rise over the pre-load baseline is what compares
    artifacts across runtimes."""
    r = cell.get("result") or {}
    st, mem, acc = r.get("stats") or {}, r.get("memory") or {}, r.get("accuracy") or {}
    if acc:
        top1 = acc.get("top1_agreement")
        acc_s = (f"top1 {top1:.3f} " if top1 is not None else "") + f"cos {acc.get('cosine', 0):.4f}"
    else:
        acc_s = "-"
    status = cell["status"] if not cell.get("error") else f"{cell['status']}: {cell['error'][:80]}"
    return [
        cell["device_id"],
        cell.get("ran_on") or "-",
        "yes" if cell["emulated"] else "no",
        cell["artifact_id"],
        _fmt(st.get("p50_ms")),
        _fmt(st.get("p90_ms")),
        _fmt(st.get("p99_ms")),
        _fmt(r.get("load_ms"), ".1f"),
        _fmt(mem.get("peak_rss_mb"), ".1f"),
        _fmt(mem.get("rise_mb"), ".1f"),
        acc_s,
        status,
    ]


HEADERS = ["device", "ran_on", "emulated", "artifact", "p50 ms", "p90 ms", "p99 ms", "load ms", "peak MB", "rise MB",
           "accuracy",
           "status"]  # fmt: skip


def render_cells(cells: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*HEADERS, show_lines=False)
    for c in cells:
        table.add_row(*cell_row(c))
    Console(width=200).print(table)


@click.command("bench")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--devices",
    "devices_file",
    default="devices.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="devices.yaml listing devices and settings.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for results.json and the per-cell work files.",
)
@click.option(
    "--fallback",
    type=click.Choice(["emulator", "none"]),
    default=None,
    help="Absent devices: run on mpk's virtual device (marked emulated) or skip. Default: emulator "
    "when env CI is set, else none.",
)
@click.option("--device", "only_devices", multiple=True, help="Only this device id (repeatable).")
@click.option("--artifact", "only_artifacts", multiple=True, help="Only this artifact id (repeatable).")
@click.option("--iterations", type=click.IntRange(min=1), help="Override min_iterations.")
@click.option("--min-seconds", type=click.FloatRange(min=0), help="Override min_seconds.")
@click.option("--warmup", type=click.IntRange(min=0), help="Override warmup_iterations.")
@click.option("--threads", type=click.IntRange(min=1), help="Override threads on every device.")
@click.option("--cooldown", type=click.FloatRange(min=0), help="Override cooldown_s.")
@click.option("--dry-run", is_flag=True, help="Print the resolved matrix and settings; run nothing.")
@click.option(
    "--until-conclusive",
    is_flag=True,
    help="Re-measure cells whose latency budget check is inconclusive (needs budgets in devices.yaml).",
)
def bench(manifest: Path, devices_file: Path, out_dir: Path, fallback: str | None, only_devices: tuple[str, ...],
          only_artifacts: tuple[str, ...], iterations: int | None, min_seconds: float | None, warmup: int | None,
          threads: int | None, cooldown: float | None, dry_run: bool, until_conclusive: bool) -> None:  # fmt: skip
    """Benchmark MANIFEST's artifacts on the devices in devices.yaml; write OUT/results.json.

    Exit 0 when every cell ran (skipped absent devices included), 4 when any cell failed
    (the failure is in results.json), 2 for a bad flag, manifest or devices.yaml.
    """
    # fmt: off
    from runners.devices import load_devices
    from runners.matrix import describe_plan, dump, run_matrix
    # fmt: on

    config = load_devices(devices_file)
    if until_conclusive and not config.budgets:
        raise UsageError("--until-conclusive needs a budgets: list in devices.yaml")
    overrides = {"min_iterations": iterations, "min_seconds": min_seconds, "warmup_iterations": warmup,
                 "threads": threads, "cooldown_s": cooldown}  # fmt: skip
    kw = {"fallback": fallback, "only_devices": list(only_devices) or None,
          "only_artifacts": list(only_artifacts) or None, "overrides": overrides}  # fmt: skip
    if dry_run:
        click.echo(dump(describe_plan(manifest, config, **kw)))
        return
    results = run_matrix(manifest, config, out_dir, progress=_progress(), devices_file=str(devices_file), **kw)
    if until_conclusive:
        results = _until_conclusive(results, manifest, config, out_dir)
    render_cells(results["cells"])
    click.echo(f"results: {Path(out_dir) / 'results.json'}")
    failed = [c for c in results["cells"] if c["status"] == "error"]
    if failed:
        raise InfraError(f"{len(failed)} of {len(results['cells'])} cell(s) failed; see the status column")


def _until_conclusive(results: dict, manifest: Path, config: Any, out_dir: Path) -> dict:
    try:
        from runners.gate.conclusive import remeasure_inconclusive
    except ImportError as e:
        raise UsageError(f"--until-conclusive is not available in this install: {e}") from e
    from runners.results import write_results

    results = remeasure_inconclusive(results, config.budgets, manifest=manifest, devices_config=config,
                                     log=lambda m: click.echo(m, err=True))  # fmt: skip
    write_results(Path(out_dir) / "results.json", results)
    return results


def _progress():
    """A rich progress bar on stderr, advanced as cells finish."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)  # fmt: skip
    state: dict[str, Any] = {}

    def on_event(ev: dict[str, Any]) -> None:
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("bench", total=ev["total"])
        if ev["event"] == "start":
            progress.update(state["task"], description=f"{ev['device']} / {ev['artifact']}")
        else:
            progress.advance(state["task"])
            if progress.tasks[0].completed >= ev["total"]:
                progress.stop()

    return on_event


@click.command("devices")
@click.option("--devices", "devices_file", default="devices.yaml", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))  # fmt: skip
@click.option("--no-probe", is_flag=True, help="Validate only; do not contact devices.")
def devices(devices_file: Path, no_probe: bool) -> None:
    """Validate devices.yaml and list its devices with reachability. Exit 2 when the file is invalid."""
    from rich.console import Console
    from rich.table import Table

    from runners.devices import load_devices
    from runners.drivers import get_driver

    config = load_devices(devices_file)
    table = Table("id", "kind", "runner", "transport", "target", "threads", "reachable")
    for d in config.devices:
        if no_probe:
            reach = "not probed"
        elif d.is_virtual:
            reach = "started on demand by mpk bench (emulated)"
        else:
            p = get_driver(d.runner).probe(d)
            reach = ("yes: " if p.reachable else "no: ") + p.detail
        threads = str(d.threads or config.defaults.threads)
        table.add_row(d.id, d.kind, d.runner, d.transport or "-", d.serial or d.address or "-", threads, reach)
    Console(width=200).print(table)
    s = config.defaults
    click.echo(f"defaults: warmup {s.warmup_iterations}, >= {s.min_iterations} iterations and >= {s.min_seconds:g} s "
               f"(cap {s.max_seconds}), threads {s.threads}, cooldown {s.cooldown_s:g} s; "
               f"{len(config.budgets)} budget rule(s)")  # fmt: skip
