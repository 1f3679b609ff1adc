"""``mpk bench`` as one library call: :func:`run_bench` returns the results and the exit code.

Around the matrix (:func:`runners.matrix.run_matrix`) it owns what a run means to the user:

* the output folder loses nothing (:mod:`mpk.outdir`): the run writes into a staging folder beside
  ``--out`` (``results.json`` rewritten after every cell), which replaces ``--out`` only when the run
  ends; the previous folder is kept as ``OUT.prev``; a folder holding files mpk did not write is
  refused unless ``force``;
* Ctrl-C kills the runner of the cell in flight, leaves ``--out`` as it was, and keeps the finished
  cells in ``OUT.partial/results.json`` (``complete: false``);
* ``until_conclusive`` re-measures cells whose latency budget check is inconclusive
  (:mod:`runners.gate.conclusive`) before the folder is swapped in;
* the exit code: 0 when every cell ran or was skipped, 4 when any cell failed, had no runtime, or lost
  its device (the reason is in the cell), 2 for a bad flag, manifest or devices.yaml;
* with ``ray`` set, each device's cells run on the Ray agent of its host (:mod:`runners.ray_matrix`);
  Ray is imported only then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpk.contract import Outcome, Results, write_results
from mpk.errors import EXIT_INFRA, EXIT_OK, Interrupted, UsageError
from mpk.outdir import OutputKind, prepare
from runners.config import load_devices
from runners.matrix import Bench, Fallback, ProgressFn, describe_plan, run_matrix

#: a bench output folder mpk wrote (also recognised without its marker, from before the marker existed)
BENCH_OUTPUT = OutputKind("bench", {"results.json": "mpk.results/", "work": None})
#: outcomes that make ``mpk bench`` exit 4
FAILED_OUTCOMES = (Outcome.FAILED, Outcome.UNSUPPORTED, Outcome.INFRA_ERROR)


@dataclass(frozen=True)
class BenchConfig:
    """Everything ``mpk bench`` is asked to do. ``None`` settings keep devices.yaml's."""

    manifest: Path
    out: Path
    devices_file: Path = Path("devices.yaml")
    fallback: Fallback | None = None
    only_devices: tuple[str, ...] = ()
    only_artifacts: tuple[str, ...] = ()
    iterations: int | None = None
    min_seconds: float | None = None
    warmup: int | None = None
    threads: int | None = None
    cooldown: float | None = None
    until_conclusive: bool = False
    #: replace an --out that holds files mpk did not write (they are kept in OUT.prev)
    force: bool = False
    #: a Ray cluster's HOST:PORT: run each device's cells on the agent of its host (devices.yaml ``host:``)
    ray: str | None = None
    #: accept a ``ray`` address that is not loopback (a Ray port lets whoever reaches it run code)
    ray_allow_remote: bool = False
    #: a profiled pass per artifact after its timed loop, on every device (devices.yaml ``profile: true`` per device)
    profile: bool = False

    def overrides(self) -> dict[str, Any]:
        """The run settings the flags override (RunSettings field names)."""
        return {"min_iterations": self.iterations, "min_seconds": self.min_seconds, "warmup_iterations": self.warmup,
                "threads": self.threads, "cooldown_s": self.cooldown,
                "profile": True if self.profile else None}  # fmt: skip


@dataclass
class BenchOutcome:
    results: Results
    results_path: Path
    exit_code: int
    summary: str
    #: where the previous --out went (OUT.prev), when there was one
    previous: Path | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)


def plan_bench(config: BenchConfig) -> dict[str, Any]:
    """The resolved matrix and settings, measuring nothing (``mpk bench --dry-run``)."""
    devices = load_devices(config.devices_file)
    return describe_plan(config.manifest, devices, fallback=config.fallback,
                         only_devices=list(config.only_devices) or None,
                         only_artifacts=list(config.only_artifacts) or None, overrides=config.overrides())  # fmt: skip


def run_bench(
    config: BenchConfig,
    *,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] | None = None,
    virtual_factory: Callable[[], tuple[str, Callable[[], None]]] | None = None,
) -> BenchOutcome:
    """Benchmark the manifest's artifacts on the devices; return the results with ``mpk bench``'s exit code."""
    devices = load_devices(config.devices_file)
    if config.until_conclusive and not devices.budgets:
        raise UsageError("--until-conclusive needs a budgets: list in devices.yaml")
    bench_factory: Callable[..., Bench] = Bench
    if config.ray is None and config.ray_allow_remote:
        raise UsageError("--ray-allow-remote applies to --ray only")
    if config.ray is not None:  # checked before anything is written: a refused address leaves --out alone
        bench_factory = _ray_bench(config)
    staged = prepare(config.out, BENCH_OUTPUT, force=config.force)
    partial = staged.staging / "results.json"
    try:
        results = run_matrix(config.manifest, devices, staged.staging, fallback=config.fallback,
                             only_devices=list(config.only_devices) or None,
                             only_artifacts=list(config.only_artifacts) or None, overrides=config.overrides(),
                             progress=progress, virtual_factory=virtual_factory,
                             devices_file=str(config.devices_file), bench_factory=bench_factory)  # fmt: skip
        if config.until_conclusive:
            from runners.gate.conclusive import remeasure_inconclusive

            results = remeasure_inconclusive(results, devices.budgets, manifest=Path(config.manifest).resolve(),
                                             devices_config=devices, log=log)  # fmt: skip
            write_results(partial, results)
        previous = staged.commit()
    except KeyboardInterrupt:
        kept = staged.abandon(keep=partial.exists())
        where = f"; the finished cells are in {kept / 'results.json'} (complete: false)" if kept else ""
        raise Interrupted(f"{config.out} was left as it was{where}") from None
    except BaseException:
        staged.abandon(keep=partial.exists())
        raise
    cells = results["cells"]
    failed = [c for c in cells if c["outcome"] in FAILED_OUTCOMES]
    summary = (f"{len(failed)} of {len(cells)} cell(s) failed; see the status column" if failed
               else f"{len(cells)} cell(s) ran or were skipped")  # fmt: skip
    return BenchOutcome(results=results, results_path=Path(config.out) / "results.json",
                        exit_code=EXIT_INFRA if failed else EXIT_OK, summary=summary, previous=previous,
                        failed=failed)  # fmt: skip


def _ray_bench(config: BenchConfig) -> Callable[..., Bench]:
    from mpk.raycluster import check_reachable, parse_address

    address = parse_address(config.ray or "", allow_remote=config.ray_allow_remote)
    if config.until_conclusive:
        raise UsageError("--until-conclusive re-measures on this machine; it does not combine with --ray")
    check_reachable(address)
    from runners.ray_matrix import RayBench

    return functools.partial(RayBench, address=address)
