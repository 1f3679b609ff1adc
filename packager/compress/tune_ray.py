"""``mpk tune --ray``: every (channel ratio, scheme) trial of the grid is one Ray task.

:class:`RayTrials` is what :func:`packager.compress.tune.run_tune` calls at the one place it runs trials:
``run(cfg, specs, work, echo)`` takes the grid as ``[(ratio, scheme), ...]`` and returns one ``Trial`` per
spec, in the same order, including the trials that died. Each task runs :func:`run_one_trial`, which is
``run_tune`` itself on a one-trial grid (the path ``mpk tune --replay`` takes, which reproduces a trial
exactly: seeded data and distillation, deterministic export), so the trials, the Pareto front the caller
computes from them and the saved recipe are those of a local run with the same seed. Latency is the one
measured number: it varies run to run, here as locally.

* **grid and order:** the specs in the caller's order; results come back in that order, whatever order
  the tasks finish in (each finished trial is echoed as it lands);
* **concurrency:** at most ``max_concurrent`` trials at once (default: the cluster's CPUs / per-trial CPUs);
* **per-trial resources:** ``num_cpus = cfg.threads`` (the torch and runtime threads a trial uses);
* **time budget:** a trial checks ``trial_timeout`` between its phases, as locally; a task still running
  ``grace_s`` after that (counted from its submission) is killed (``ray.cancel(force=True)``) and reported
  ``timeout``;
* **a trial that dies** (its worker crashes, is killed, runs out of memory, or its node leaves) is
  reported with ``status: died`` and Ray's reason, never dropped; an exception mpk does not turn into a
  trial error itself is ``status: error``;
* **artifacts:** each trial's files come back through the object store, are sha256-checked on arrival and
  land in ``work`` where a local run puts them.

Why Ray tasks and not Ray Tune: the search is a fixed grid whose trials report once, at the end, so Tune's
search algorithms and schedulers (ASHA, PBT, Bayesian) have nothing to act on; Tune cannot stop a function
trial that does not report, which is exactly the trial the time budget is for; and on a 2-core machine a
Tune grid of four trivial trials took 12.5 s against 0.8 s as tasks (Ray 2.60). If the search ever becomes
adaptive, Tune is the place for it.

Only the grid (``--target channels``: uniform ratios x schemes) goes to Ray. The MAC/parameter search is a
bisection, one amount at a time, each picked from the last pass or miss, so it has no independent trials to
spread; ``mpk tune --ray`` with the search (or a one-variant replay) is refused with exit 2 rather than run
locally behind the user's back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpk.raycluster import RayAddress

#: statuses of a task that produced no trial of its own
DIED, TIMEOUT, ERROR = "died", "timeout", "error"


@dataclass
class TaskOutcome:
    """What became of one task: ``value`` when ``status`` is ok, else the reason in ``error``."""

    index: int
    status: str = "ok"
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


def run_tasks(fn: Callable[..., Any], args: list[tuple], *, num_cpus: float, max_concurrent: int, timeout_s: float,
              on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:  # fmt: skip
    """``fn(*a)`` for each ``a`` in ``args`` as Ray tasks (a driver must be connected); outcomes in ``args`` order.

    At most ``max_concurrent`` run at once; one still running ``timeout_s`` after its submission is killed.
    ``fn`` must be importable on the cluster's nodes (a module-level function of mpk).
    """
    import ray

    task = ray.remote(fn).options(num_cpus=num_cpus, max_retries=0)
    outcomes: list[TaskOutcome | None] = [None] * len(args)
    queue = list(enumerate(args))
    running: dict[Any, tuple[int, float]] = {}

    def finish(o: TaskOutcome) -> None:
        outcomes[o.index] = o
        if on_done:
            on_done(o)

    while queue or running:
        while queue and len(running) < max(1, max_concurrent):
            i, a = queue.pop(0)
            running[task.remote(*a)] = (i, time.monotonic())
        first_deadline = min(t0 for _, t0 in running.values()) + timeout_s
        ready, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, first_deadline - time.monotonic()))
        for ref in ready:
            i, t0 = running.pop(ref)
            finish(_collect(ray, ref, i, t0))
        now = time.monotonic()
        for ref, (i, t0) in list(running.items()):
            if now - t0 >= timeout_s:
                ray.cancel(ref, force=True)  # kills the worker process: nothing of the trial keeps running
                del running[ref]
                finish(TaskOutcome(i, TIMEOUT, error=f"killed after {timeout_s:g} s", seconds=now - t0))
    return [o for o in outcomes if o is not None]


def _collect(ray: Any, ref: Any, i: int, t0: float) -> TaskOutcome:
    seconds = time.monotonic() - t0
    try:
        return TaskOutcome(i, value=ray.get(ref), seconds=seconds)
    except ray.exceptions.RayTaskError as e:  # the trial's own code raised
        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
        return TaskOutcome(i, ERROR, error=f"{type(cause).__name__}: {_first_line(cause)}", seconds=seconds)
    except ray.exceptions.RayError as e:  # the worker or its node died under it
        return TaskOutcome(i, DIED, error=f"the trial's Ray worker died: {_first_line(e)}", seconds=seconds)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln for ln in lines if not ln.startswith(("Traceback", "File ", "ray::"))), type(e).__name__)[:300]


def run_one_trial(cfg: Any, ratio: float, scheme: str) -> tuple[Any, list[tuple[str, str, bytes]]]:
    """One trial, on whichever node Ray chose: ``run_tune`` on the one-trial grid, in a temporary folder.

    Returns the Trial (its ``artifact`` relative to that folder) and the artifact's files as
    ``(relative path, sha256, bytes)``.
    """
    import tempfile

    from packager.compress.tune import run_tune

    with tempfile.TemporaryDirectory(prefix="mpk-trial-") as tmp:
        one = dataclasses.replace(cfg, amounts=(ratio,), schemes=(scheme,))
        [trial] = run_tune(one, Path(tmp), progress=False).trials
        files: list[tuple[str, str, bytes]] = []
        if trial.artifact:
            art = Path(trial.artifact)
            for f in sorted(p for p in art.rglob("*") if p.is_file()) if art.is_dir() else [art]:
                data = f.read_bytes()
                files.append((f.relative_to(tmp).as_posix(), hashlib.sha256(data).hexdigest(), data))
            trial.artifact = art.relative_to(tmp).as_posix()
        return trial, files


@dataclass(frozen=True)
class RayTrials:
    """Runs a tune grid's trials as Ray tasks (module docstring). ``address=None`` starts a private Ray
    instance on this machine, on loopback, for the search, and ends it after."""

    address: RayAddress | None = None
    max_concurrent: int | None = None
    #: how long past ``trial_timeout`` a trial's task may run before it is killed
    grace_s: float = 60.0

    def run(self, cfg: Any, specs: list[tuple[float, str]], work: Path, echo: Callable[[str], None]) -> list[Any]:
        from mpk.raycluster import connect, disconnect
        from packager.compress.tune import Trial, _trial_line

        trials: list[Any] = [None] * len(specs)

        def landed(o: TaskOutcome) -> None:
            ratio, scheme = specs[o.index]
            if o.status == "ok":
                trial, files = o.value
                trials[o.index] = _land(trial, files, Path(work))
            else:
                trials[o.index] = Trial(prune=ratio, scheme=scheme, target=cfg.target, status=o.status,
                                        error=o.error, seconds=round(o.seconds, 2))  # fmt: skip
            echo(_trial_line(trials[o.index]))

        cpus = float(cfg.threads or 1)
        ray = connect(self.address)
        try:
            limit = self.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
            run_tasks(run_one_trial, [(cfg, r, s) for r, s in specs], num_cpus=cpus, max_concurrent=limit,
                      timeout_s=cfg.trial_timeout + self.grace_s, on_done=landed)  # fmt: skip
        finally:
            disconnect()
        return trials


def _land(trial: Any, files: list[tuple[str, str, bytes]], work: Path) -> Any:
    """Write a remote trial's artifact files under ``work`` (sha256-checked); point ``trial.artifact`` there."""
    tops = {rel.split("/")[0] for rel, _, _ in files}
    for top in tops:  # a trial folder is replaced whole, as a local trial replaces it
        shutil.rmtree(work / top, ignore_errors=True)
    for rel, sha, data in files:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            trial.status, trial.error = ERROR, f"{rel} arrived with sha256 {digest}, sent as {sha}"
            trial.meets_floor = False
            return trial
        dest = work / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    if trial.artifact:
        trial.artifact = str(work / trial.artifact)
    return trial
