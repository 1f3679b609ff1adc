"""``mpk tune``: search prune ratio x quantization scheme under an accuracy floor.

Each trial prunes (structured, channel) and distills from the unpruned model,
exports with the real exporter, then measures on this host:

* size: artifact bytes on disk (what the app ships and loads),
* latency: median of ``latency_iters`` timed runs on the host runtime after warm-up
  (a relative ranking for this host, not a phone number: use ``mpk bench``),
* accuracy: top-1 agreement with the fp32 PyTorch model on the evaluation data,
  plus real accuracy when the data has labels.

The Pareto front (no other trial is smaller, faster *and* as accurate) is
printed, and the chosen recipe is the smallest (or fastest) trial meeting the
floor. ``--save-recipe`` writes it as a packaging recipe with a
``compression:`` section, which ``mpk tune --replay`` re-runs to the same result
(export is deterministic; distillation is seeded).

Trial timeouts are checked between phases (distillation gets the remaining
time as its wall-clock cap); one export step is not interrupted midway.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mpk.errors import ConfigError, MpkError, UsageError
from packager.compress import check_ratio
from packager.compress.distill import DistillConfig
from packager.compress.recipe_io import CompressionConfig, load_compression_file
from packager.compress.structured import StructuredPruneConfig

FLOOR_KEYS = ("top1_agreement", "accuracy", "cosine", "snr_db")


@dataclass(frozen=True)
class TuneConfig:
    """One search. ``floor={"top1_agreement": 0.98}``: a trial counts only if 98% of its top-1s match fp32."""

    model: str
    backend: str = "executorch"
    floor: dict[str, float] = field(default_factory=lambda: {"top1_agreement": 0.98})
    prune: tuple[float, ...] = (0.0, 0.25, 0.5)
    schemes: tuple[str, ...] = ("fp32", "int8")
    importance: str = "l1"
    round_to: int | None = 8
    #: ``samples`` sets how many calibration-source samples distillation trains on
    distill: DistillConfig | None = field(default_factory=lambda: DistillConfig(epochs=2, samples=512))
    trial_timeout: float = 600.0
    latency_iters: int = 20
    calibration: str = "builtin"
    calibration_count: int = 64
    evaluation: str = "builtin"
    eval_count: int = 100
    objective: Literal["size", "latency"] = "size"
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for k, v in self.floor.items():
            if k not in FLOOR_KEYS:
                from mpk.registry import suggest

                problems.append(f"floor: {suggest(k, FLOOR_KEYS, 'metric')}")
            elif not isinstance(v, (int, float)):
                problems.append(f"floor.{k}: expected a number, got {v!r}")
        if not self.prune:
            problems.append("prune: give at least one ratio (0 = unpruned)")
        for i, r in enumerate(self.prune):
            try:
                check_ratio(r, f"prune[{i}]")
            except UsageError as e:
                problems.append(e.message)
        if not self.schemes:
            problems.append("schemes: give at least one scheme")
        if self.objective not in ("size", "latency"):
            problems.append(f"objective must be 'size' or 'latency', got {self.objective!r}")
        if not self.trial_timeout > 0:
            problems.append(f"trial_timeout must be > 0, got {self.trial_timeout!r}")
        if not isinstance(self.latency_iters, int) or self.latency_iters < 1:
            problems.append(f"latency_iters must be a positive integer, got {self.latency_iters!r}")
        if problems:
            raise ConfigError("tune", problems)

    def compression_for(self, ratio: float) -> CompressionConfig:
        if ratio == 0:
            return CompressionConfig()
        return CompressionConfig(
            structured=StructuredPruneConfig(ratio=ratio, importance=self.importance, round_to=self.round_to),  # type: ignore[arg-type]
            distill=self.distill,
        )


@dataclass
class Trial:
    prune: float
    scheme: str
    status: str = "ok"  # ok | error | timeout
    error: str | None = None
    size_bytes: int = 0
    latency_ms: float = 0.0
    top1_agreement: float = 0.0
    accuracy: float | None = None
    cosine: float = 0.0
    snr_db: float = 0.0
    parameters: int = 0
    seconds: float = 0.0
    meets_floor: bool = False
    pareto: bool = False
    artifact: str | None = None

    def metric(self, key: str) -> float | None:
        return getattr(self, key)


@dataclass
class TuneResult:
    config: TuneConfig
    trials: list[Trial]
    chosen: Trial | None
    fp32_accuracy: float | None = None

    @property
    def pareto(self) -> list[Trial]:
        return [t for t in self.trials if t.pareto]

    def recipe(self) -> dict[str, Any]:
        """The chosen trial as a packaging recipe (pipeline keys + ``compression:``)."""
        if self.chosen is None:
            raise UsageError("no trial met the floor; nothing to save")
        c = self.config
        return {
            "model": c.model,
            "backends": [c.backend],
            "schemes": [self.chosen.scheme],
            "calibration": c.calibration,
            "calibration_count": c.calibration_count,
            "evaluation": c.evaluation,
            "eval_count": c.eval_count,
            "seed": c.seed,
            "compression": c.compression_for(self.chosen.prune).to_dict(),
        }


def _pareto(trials: list[Trial], acc_key: str) -> None:
    """Mark trials no other ok trial beats on size, latency and accuracy at once."""
    ok = [t for t in trials if t.status == "ok"]
    for t in ok:
        t.pareto = not any(
            o is not t
            and o.size_bytes <= t.size_bytes
            and o.latency_ms <= t.latency_ms
            and (o.metric(acc_key) or 0) >= (t.metric(acc_key) or 0)
            and (
                o.size_bytes < t.size_bytes
                or o.latency_ms < t.latency_ms
                or (o.metric(acc_key) or 0) > (t.metric(acc_key) or 0)
            )
            for o in ok
        )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def run_tune(cfg: TuneConfig, out_dir: Path | None = None, *, progress: bool = True, echo: Any = None,
             executor: Any = None) -> TuneResult:  # fmt: skip
    """Run every (prune ratio, scheme) trial and pick the recipe. ``echo(str)`` receives one line per trial.

    ``executor`` runs the trials elsewhere: ``executor.run(cfg, [(ratio, scheme), ...], work, echo)`` returns
    one Trial per pair, in that order (``mpk tune --ray``: :class:`packager.compress.tune_ray.RayTrials`).
    """
    import tempfile

    import numpy as np
    import torch

    from packager.compress.recipe_io import apply_compression, check_compression
    from packager.compress.sensitivity import compare
    from packager.data import load_dataset
    from packager.export import get_exporter
    from packager.export.capabilities import resolve_scheme
    from packager.models import load_model

    echo = echo or (lambda s: None)
    exporter = get_exporter(cfg.backend)
    schemes = [resolve_scheme(cfg.backend, s) for s in cfg.schemes]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = load_model(cfg.model)
    for r in cfg.prune:  # every bad ratio/layer refused before the first minute of work
        check_compression(model, cfg.compression_for(r))
    cal = load_dataset(cfg.calibration, model, count=cfg.calibration_count, purpose="calibration", seed=cfg.seed)
    train = cal
    n_train = cfg.distill.samples if cfg.distill is not None else None
    if any(r > 0 for r in cfg.prune) and n_train and n_train != cfg.calibration_count:
        train = load_dataset(cfg.calibration, model, count=n_train, purpose="calibration", seed=cfg.seed)
    ev = load_dataset(cfg.evaluation, model, count=cfg.eval_count, purpose="evaluation", seed=cfg.seed)
    with torch.no_grad():
        ref = [model.module.eval()(*(torch.from_numpy(np.asarray(a)) for a in s)).numpy() for s in ev.samples]
    fp32_acc = None
    if ev.labels is not None:
        fp32_acc = float(np.mean([r[0].argmax() == y for r, y in zip(ref, ev.labels, strict=True)]))
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="mpk-tune-"))
    trials: list[Trial] = []
    if executor is not None:  # elsewhere, each trial on its own: the loop below, on a one-trial grid
        trials = executor.run(cfg, [(r, s) for r in cfg.prune for s in schemes], work, echo)
    for ratio in cfg.prune if executor is None else ():
        compressed = None
        for scheme in schemes:
            t = Trial(prune=ratio, scheme=scheme)
            t0 = time.monotonic()
            try:
                if compressed is None:
                    ccfg = cfg.compression_for(ratio)
                    if ccfg.distill is not None:  # the trial's remaining time caps training
                        ccfg = dataclasses.replace(
                            ccfg,
                            distill=dataclasses.replace(
                                ccfg.distill, max_seconds=min(ccfg.distill.max_seconds, cfg.trial_timeout)
                            ),
                        )
                    compressed = apply_compression(model, ccfg, train, progress=progress)
                pm = compressed.model
                t.parameters = sum(p.numel() for p in pm.module.parameters())
                _check_time(t0, cfg.trial_timeout, "compression")
                tdir = work / f"prune{ratio:g}-{scheme}"
                shutil.rmtree(tdir, ignore_errors=True)
                art = exporter.export(pm, scheme, cal, tdir)
                _check_time(t0, cfg.trial_timeout, "export")
                t.artifact = str(art.path)
                t.size_bytes = _size(art.path)
                sess = exporter.open(art.path, threads=cfg.threads)
                outs = [sess.run(s)[0] for s in ev.samples]
                m = compare(ref, outs)
                t.top1_agreement, t.cosine, t.snr_db = m["top1_agreement"], m["cosine"], m["snr_db"]
                if ev.labels is not None:
                    t.accuracy = float(np.mean([o[0].argmax() == y for o, y in zip(outs, ev.labels, strict=True)]))
                t.latency_ms = _latency(sess, model.example_inputs, cfg.latency_iters, t0 + cfg.trial_timeout)
                _check_time(t0, cfg.trial_timeout, "latency")
            except _TrialTimeout as e:
                t.status, t.error = "timeout", str(e)
            except MpkError as e:
                t.status, t.error = "error", e.format_message().splitlines()[0]
            t.seconds = round(time.monotonic() - t0, 2)
            t.meets_floor = t.status == "ok" and all((t.metric(k) or 0) >= v for k, v in cfg.floor.items())
            trials.append(t)
            echo(_trial_line(t))
    acc_key = next(iter(cfg.floor), "top1_agreement")
    _pareto(trials, acc_key)
    ok = [t for t in trials if t.meets_floor]
    key = (
        (lambda t: (t.size_bytes, t.latency_ms))
        if cfg.objective == "size"
        else (lambda t: (t.latency_ms, t.size_bytes))
    )
    chosen = min(ok, key=key) if ok else None
    return TuneResult(cfg, trials, chosen, fp32_acc)


class _TrialTimeout(Exception):
    pass


def _check_time(t0: float, limit: float, phase: str) -> None:
    if time.monotonic() - t0 > limit:
        raise _TrialTimeout(f"trial exceeded {limit:g}s (after {phase})")


def _latency(sess: Any, example: tuple, iters: int, deadline: float) -> float:
    import numpy as np

    x = tuple(np.asarray(a.numpy() if hasattr(a, "numpy") else a) for a in example)
    for _ in range(3):  # warm-up: first runs allocate and pack weights
        sess.run(x)
    times = []
    for _ in range(iters):
        s = time.perf_counter()
        sess.run(x)
        times.append((time.perf_counter() - s) * 1e3)
        if time.monotonic() > deadline:
            break
    return round(statistics.median(times), 4)


def _trial_line(t: Trial) -> str:
    if t.status != "ok":
        return f"  prune {t.prune:<5g} {t.scheme:<12} {t.status}: {t.error} ({t.seconds:.1f}s)"
    acc = f" acc {t.accuracy:.4f}" if t.accuracy is not None else ""
    return (
        f"  prune {t.prune:<5g} {t.scheme:<12} size {t.size_bytes:>10,} B  latency {t.latency_ms:8.3f} ms  "
        f"top1 {t.top1_agreement:.4f}{acc}  ({t.seconds:.1f}s)"
    )


def format_result(res: TuneResult) -> str:
    """The trials table with Pareto and floor marks, then the chosen recipe."""
    head = (
        f"{'prune':>5} {'scheme':<12} {'params':>9} {'size B':>11} {'lat ms':>9} "
        f"{'top1':>7} {'acc':>7} {'floor':>5} {'pareto':>6}"
    )
    lines = [head, "-" * len(head)]
    for t in res.trials:
        if t.status != "ok":
            lines.append(f"{t.prune:>5g} {t.scheme:<12} {t.status}: {t.error}")
            continue
        acc = f"{t.accuracy:.4f}" if t.accuracy is not None else "-"
        lines.append(
            f"{t.prune:>5g} {t.scheme:<12} {t.parameters:>9} {t.size_bytes:>11,} {t.latency_ms:>9.3f} "
            f"{t.top1_agreement:>7.4f} {acc:>7} {'yes' if t.meets_floor else 'no':>5} {'*' if t.pareto else '':>6}"
        )
    floor = ", ".join(f"{k}>={v:g}" for k, v in res.config.floor.items())
    if res.chosen:
        c = res.chosen
        lines.append(f"chosen ({res.config.objective}, {floor}): prune {c.prune:g} + {c.scheme}, {c.size_bytes:,} B")
    else:
        lines.append(f"no trial met the floor ({floor})")
    lines.append("latency: median on this host's runtime, for ranking only; measure phones with `mpk bench`")
    return "\n".join(lines)


def save_recipe(res: TuneResult, path: Path) -> dict[str, Any]:
    recipe = res.recipe()
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return recipe


def replay_config(path: Path, **overrides: Any) -> TuneConfig:
    """A one-trial TuneConfig that re-runs a saved recipe exactly (same prune, scheme, distillation, data)."""
    comp, raw = load_compression_file(Path(path))
    problems = [f"{k}: required" for k in ("model", "backends", "schemes") if k not in raw]
    if problems:
        raise ConfigError(str(path), problems)
    s = comp.structured
    kw: dict[str, Any] = {
        "model": raw["model"],
        "backend": raw["backends"][0],
        "schemes": tuple(raw["schemes"][:1]),
        "prune": (s.ratio if s else 0.0,),
        "distill": comp.distill,
        "calibration": raw.get("calibration", "builtin"),
        "calibration_count": raw.get("calibration_count", 64),
        "evaluation": raw.get("evaluation", "builtin"),
        "eval_count": raw.get("eval_count", 100),
        "seed": raw.get("seed", 0),
    }
    if s is not None:
        kw["importance"], kw["round_to"] = s.importance, s.round_to
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TuneConfig(**kw)
