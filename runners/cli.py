"""``mpk bench`` and ``mpk devices``. Thin: parse, build the config, call one library function, render.

Heavy imports (numpy, the matrix, rich) stay inside the command functions so
``mpk --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def cell_row(cell: dict[str, Any]) -> list[str]:
    """One table row: device, ran_on, emulated, artifact, p50/p90/p99, load, peak and rise MB, accuracy, outcome.

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
    word = cell["outcome"].replace("_", " ")
    status = word if not cell.get("error") else f"{word}: {cell['error'][:80]}"
    ran_on = cell.get("ran_on") or "-"
    if cell.get("where"):  # mpk bench --ray: the host whose agent ran it
        ran_on += f" @ {cell['where']['host']}"
    return [
        cell["device_id"],
        ran_on,
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
           "outcome"]  # fmt: skip


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
@click.option("--force", is_flag=True, help="Replace an --out that holds files mpk did not write (kept as OUT.prev).")
@click.option("--ray", "ray_address", metavar="HOST:PORT",
              help="Run each device's cells on the `mpk agent` of its host (devices.yaml host:) in this Ray "
                   "cluster. Loopback unless --ray-allow-remote.")  # fmt: skip
@click.option(
    "--ray-allow-remote",
    is_flag=True,
    help="Allow a --ray address that is not loopback (trusted networks only: Ray's port runs any code).",
)
@click.option(
    "--profile",
    is_flag=True,
    help="After each timed loop, a separate profiled pass: per-op times mapped to PyTorch modules in results.json, "
    "Chrome traces in OUT/profiles/ (devices.yaml: profile: true per device).",
)
@click.pass_context
def bench(ctx: click.Context, manifest: Path, devices_file: Path, out_dir: Path, fallback: str | None,
          only_devices: tuple[str, ...], only_artifacts: tuple[str, ...], iterations: int | None,
          min_seconds: float | None, warmup: int | None, threads: int | None, cooldown: float | None, dry_run: bool,
          until_conclusive: bool, force: bool, ray_address: str | None, ray_allow_remote: bool,
          profile: bool) -> None:  # fmt: skip
    """Benchmark MANIFEST's artifacts on the devices in devices.yaml; write OUT/results.json.

    OUT is replaced only when the run ends (the previous one is kept as OUT.prev); Ctrl-C leaves it as it
    was and keeps the finished cells in OUT.partial. Exit 0 when every cell ran (skipped absent devices
    included), 4 when any cell failed (the failure is in results.json) or OUT is not writable, 2 for a bad
    flag, manifest or devices.yaml, 130 when interrupted.
    """
    from runners.bench import BenchConfig, plan_bench, run_bench

    config = BenchConfig(manifest=manifest, out=out_dir, devices_file=devices_file, fallback=fallback,  # type: ignore[arg-type]
                         only_devices=only_devices, only_artifacts=only_artifacts, iterations=iterations,
                         min_seconds=min_seconds, warmup=warmup, threads=threads, cooldown=cooldown,
                         until_conclusive=until_conclusive, force=force, ray=ray_address,
                         ray_allow_remote=ray_allow_remote, profile=profile)  # fmt: skip
    if dry_run:
        from runners.matrix import dump

        click.echo(dump(plan_bench(config)))
        return
    progress, live = _progress(), None
    if ray_address is not None:  # one live table of the cells by host and device
        from mpk.raycluster import check_reachable, parse_address
        from runners.ray_cli import LiveTable

        check_reachable(parse_address(ray_address, allow_remote=ray_allow_remote))  # exit 2 / 4 before anything
        progress = live = LiveTable(plan_bench(config))
    try:
        outcome = run_bench(config, progress=progress, log=lambda m: click.echo(m, err=True))
    finally:
        if live is not None:
            live.stop()
    render_cells(outcome.results["cells"])
    profiled = [c for c in outcome.results["cells"] if (c.get("result") or {}).get("profile")]
    if profiled:
        render_profiles(profiled)
        click.echo(f"Chrome traces (open in https://ui.perfetto.dev): {Path(out_dir) / 'profiles'}")
    click.echo(f"results: {outcome.results_path}")
    if outcome.previous is not None:
        click.echo(f"previous contents of {out_dir} kept in {outcome.previous}")
    if outcome.exit_code:
        click.echo(click.style("error: ", fg="red", bold=True) + outcome.summary, err=True)
    ctx.exit(outcome.exit_code)


def profile_row(cell: dict[str, Any]) -> list[str]:
    """device, artifact, status, per-op total vs the unprofiled p50, profiling overhead, attributed share, the
    slowest unit and the slowest op."""
    from mpk.profiling import rollup, top_ops

    p = cell["result"]["profile"]

    def pct(v: Any) -> str:
        return "-" if v is None else f"{v:+.0%}"

    units = [r for r in rollup(p, by="unit") if r["module"] is not None]
    ops = top_ops(p, 1)
    op = f"{ops[0]['name']} ({ops[0].get('module') or '?'}) {ops[0]['total_ms'] / max(p.get('runs') or 1, 1):.2f}" \
        if ops else "-"  # fmt: skip
    status = p["status"] if p["ops"] else f"{p['status']}: {(p.get('limits') or ['-'])[0][:70]}"
    return [cell["device_id"], cell["artifact_id"], status, _fmt(p.get("per_run_ms")), _fmt(p.get("unprofiled_p50_ms")),
            pct(p.get("vs_p50")), pct(p.get("overhead")),
            "-" if p.get("attributed_share") is None else f"{p['attributed_share']:.1%}",
            f"{units[0]['module']} {units[0]['ms']:.2f}" if units else "-", op]  # fmt: skip


PROFILE_HEADERS = ["device", "artifact", "profile", "ops ms/run", "p50 ms", "vs p50", "overhead", "attributed",
                   "slowest unit (ms)", "slowest op (module) ms"]  # fmt: skip


def render_profiles(cells: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*PROFILE_HEADERS, title="profiles (a separate pass after the timed loop; latencies above are "
                  "the unprofiled loop's)")  # fmt: skip
    for c in cells:
        table.add_row(*profile_row(c))
    Console(width=200).print(table)


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

    from runners.config import load_devices
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
