"""``mpk tune``: find how much to prune under an accuracy floor on held-out data.

Three kinds of data, never mixed:

* **calibration** (``--calibration``): what pruning statistics, BatchNorm re-estimation and distillation use;
* **guard** (``--evaluation``): what per-group sensitivity and the guarded recovery steps are measured on;
* **held-out** (``--held-out``): the floor is checked here and nowhere else. For the built-in models:
  EfficientNet-Lite0, the 17 other skimage images (12 views each, 204 samples), never used for
  calibration or evaluation; digits-cnn, the test split (then the guard is the calibration data, since the
  evaluation data is the same test split).

**Search** (``target: macs`` or ``params``, the default): every channel group is measured alone at a few
ratios once (:mod:`packager.compress.allocate`); then, for a MAC (parameter) reduction ``a``, the plan with
the least predicted loss is built, pruned, recovered (BatchNorm step, optional distillation, both guarded)
and checked on the held-out views in PyTorch against the fp32 model. ``a`` is searched by bisection over
``amounts`` and refined between the last pass and the first miss, within ``budget_seconds``. The result:
the largest reduction meeting the floor, every evaluated point with the Pareto front (reduction vs
agreement), and the groups that limited it (those the first failing plan had to cut further, with their
measured sensitivity). The chosen variant and the unpruned model are then exported for each scheme and
measured on the host runtime (size, latency, held-out agreement).

**Grid** (``target: channels``): every ``amount`` is a uniform channel ratio, each exported for each
scheme and measured on the host runtime; the floor applies to each artifact.

``--save-recipe`` writes the chosen variant as a packaging recipe (its per-group ratios as ``per_layer``);
``mpk tune --replay r.yaml`` reads it through the same typed :class:`packager.recipe.Recipe` as ``mpk
package`` (misspelt keys refused, every compression section applied, the same defaults) and re-runs it.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from mpk import metrics
from mpk.errors import ConfigError, DataError, MpkError, UsageError
from packager.compress import check_ratio
from packager.compress.distill import DistillConfig
from packager.compress.recipe_io import CompressionConfig
from packager.compress.recovery import RecoveryConfig
from packager.compress.structured import StructuredPruneConfig

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from packager.recipe import Recipe
    from packager.types import Dataset, LoadedModel

FLOOR_KEYS = ("top1_agreement", "accuracy", "cosine", "snr_db")
DEFAULT_AMOUNTS = {
    "macs": (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    "params": (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    "channels": (0.0, 0.25, 0.5),
}
#: fp32's top-1 probability must beat its second by this much for a held-out sample to count as "sure"
SURE_MARGIN = 0.1
#: ``--ray`` (an executor) with the search or a replay: refused in one line, never silently run locally
RAY_GRID_ONLY = (
    "--ray runs the independent trials of a grid (--target channels); the search (--target macs/params) is "
    "sequential, each amount picked from the last pass or miss, and a replay is one variant: run them without --ray"
)


def _recipe_default(name: str) -> Any:
    """The packaging recipe's default for ``name``: tune and package must not disagree on defaults."""
    from packager.recipe import Recipe

    return next(f.default for f in dataclasses.fields(Recipe) if f.name == name)


@dataclass(frozen=True)
class TuneConfig:
    """One search. ``floor={"top1_agreement": 0.95}``: a variant counts only if 95% of its held-out top-1s
    match fp32's. ``amounts``: the reductions (of ``target``) to consider; empty: the defaults above."""

    model: str
    backend: str = "executorch"
    floor: dict[str, float] = field(default_factory=lambda: {"top1_agreement": 0.95})
    target: Literal["macs", "params", "channels"] = "macs"
    amounts: tuple[float, ...] = ()
    schemes: tuple[str, ...] = ("fp32", "int8")
    importance: str | None = None
    round_to: int | None = 8
    #: the fine end finds the channels nothing reads (a projection column of zeros): free at any input
    sensitivity_ratios: tuple[float, ...] = (0.03125, 0.0625, 0.125, 0.25, 0.5)
    #: guard samples each of the ~70 sensitivity cuts runs on (SNR over all logits settles within tens)
    sensitivity_samples: int = 32
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    distill: DistillConfig | None = None
    #: wall-clock budget for the whole search (the export phase gets what is left, at least one trial)
    budget_seconds: float = 1200.0
    trial_timeout: float = 600.0
    latency_iters: int = 20
    calibration: str = "builtin"
    calibration_count: int = field(default_factory=lambda: _recipe_default("calibration_count"))
    evaluation: str = "builtin"
    eval_count: int = field(default_factory=lambda: _recipe_default("eval_count"))
    held_out: str = "builtin"
    held_out_count: int | None = None
    objective: Literal["size", "latency"] = "size"
    threads: int | None = 1
    seed: int = 0
    #: replay: exactly this compression, one variant (amounts/target are not searched)
    compression: CompressionConfig | None = None

    def __post_init__(self) -> None:
        problems = []
        from mpk.registry import suggest

        for k, v in self.floor.items():
            if k not in FLOOR_KEYS:
                problems.append(f"floor: {suggest(k, FLOOR_KEYS, 'metric')}")
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                problems.append(f"floor.{k}: expected a number, got {v!r}")
        if self.target not in DEFAULT_AMOUNTS:
            problems.append(f"target: {suggest(str(self.target), list(DEFAULT_AMOUNTS), 'target')}")
        for i, r in enumerate(self.amounts):
            try:
                check_ratio(r, f"prune[{i}]")
            except UsageError as e:
                problems.append(e.message)
        if not self.schemes:
            problems.append("schemes: give at least one scheme")
        if self.objective not in ("size", "latency"):
            problems.append(f"objective must be 'size' or 'latency', got {self.objective!r}")
        for k in ("trial_timeout", "budget_seconds"):
            if not getattr(self, k) > 0:
                problems.append(f"{k} must be > 0, got {getattr(self, k)!r}")
        for k in ("latency_iters", "sensitivity_samples"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{k} must be a positive integer, got {v!r}")
        if problems:
            raise ConfigError("tune", problems)
        try:  # the structured settings every variant will use: refuse a bad importance/ratio now
            self.structured_for(0.0, {})
        except UsageError as e:
            raise ConfigError("tune", [e.message]) from None

    @property
    def search(self) -> bool:
        return self.compression is None and self.target != "channels"

    @property
    def grid(self) -> bool:
        """Uniform channel ratios x schemes: independent trials (what ``--ray`` can run in parallel)."""
        return self.compression is None and self.target == "channels"

    @property
    def amount_list(self) -> tuple[float, ...]:
        return tuple(sorted(set(self.amounts or DEFAULT_AMOUNTS[self.target])))

    def structured_for(self, amount: float, per_layer: dict[str, float]) -> StructuredPruneConfig:
        imp = self.importance or ("energy" if self.target != "channels" else "l1")
        return StructuredPruneConfig(
            ratio=0.0 if per_layer else amount,
            importance=imp,  # type: ignore[arg-type]
            round_to=self.round_to,
            per_layer=dict(per_layer),
        )

    def compression_for(self, amount: float, per_layer: dict[str, float] | None = None) -> CompressionConfig:
        """The compression a variant runs: a uniform ratio (grid) or a plan's per-group ratios (search)."""
        if self.compression is not None:
            return self.compression
        if amount == 0 and not per_layer:
            return CompressionConfig()
        return CompressionConfig(
            structured=self.structured_for(amount, per_layer or {}), recovery=self.recovery, distill=self.distill
        )


@dataclass
class Trial:
    """One evaluated variant. Search trials run in PyTorch (``scheme`` "pytorch-fp32"); export trials on the
    backend's host runtime. ``prune``: the amount removed, of ``target``."""

    prune: float
    scheme: str
    target: str = "macs"
    status: str = "ok"  # ok | error | timeout
    error: str | None = None
    macs: int = 0
    mac_reduction: float = 0.0
    parameters: int = 0
    size_bytes: int = 0
    latency_ms: float = 0.0
    #: over the held-out samples whose fp32 top-1 is clear (:func:`mpk.metrics.clear`), ``top1_counted`` of them
    top1_agreement: float = 0.0
    top1_counted: int | None = None
    #: agreement on the held-out samples where fp32's top-1 beats its second by > SURE_MARGIN
    top1_agreement_sure: float | None = None
    accuracy: float | None = None
    cosine: float = 0.0
    snr_db: float = 0.0
    predicted_snr_db: float | None = None
    guard_top1_agreement: float | None = None
    seconds: float = 0.0
    meets_floor: bool = False
    pareto: bool = False
    artifact: str | None = None
    per_layer: dict[str, float] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)

    def metric(self, key: str) -> float | None:
        return getattr(self, key)


@dataclass
class TuneResult:
    config: TuneConfig
    trials: list[Trial]
    chosen: Trial | None
    fp32_accuracy: float | None = None
    held_out: str = ""
    held_out_samples: int = 0
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    #: groups the first failing plan had to cut further (what stopped the search), most sensitive first
    limiting: list[dict[str, Any]] = field(default_factory=list)
    #: groups whose smallest measured cut already costs the most
    most_sensitive: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pareto(self) -> list[Trial]:
        return [t for t in self.trials if t.pareto]

    def recipe(self) -> dict[str, Any]:
        """The chosen variant as a packaging recipe (pipeline keys + ``compression:``), readable by Recipe."""
        if self.chosen is None:
            raise UsageError("no variant met the floor; nothing to save")
        c = self.config
        schemes = [s for s in c.schemes] if self.chosen.scheme.startswith("pytorch") else [self.chosen.scheme]
        comp = c.compression_for(self.chosen.prune, self.chosen.per_layer or None)
        return {
            "model": c.model,
            "backends": [c.backend],
            "schemes": schemes,
            "calibration": c.calibration,
            "calibration_count": c.calibration_count,
            "evaluation": c.evaluation,
            "eval_count": c.eval_count,
            "seed": c.seed,
            "compression": comp.to_dict(),
        }


# --- data -----------------------------------------------------------------------------------------------


def load_held_out(spec: str, model: LoadedModel, count: int | None, seed: int) -> Dataset:
    """Held-out views. ``builtin``: EfficientNet-Lite0's 17 other skimage photos; digits-cnn's test split."""
    from packager.data import load_dataset

    if spec != "builtin":
        return load_dataset(spec, model, count=count, purpose="evaluation", seed=seed)
    name = model.source.get("spec") if model.source.get("kind") == "builtin" else None
    if name == "efficientnet-lite0":
        from packager.data.builtin import HELD_OUT_PHOTOS, photo_views
        from packager.models.loaders import example_shape

        ds = photo_views(HELD_OUT_PHOTOS, example_shape(model.inputs[0]), model.preprocess, count, "evaluation")
        return dataclasses.replace(ds, source=ds.source.replace("evaluation", "held-out"))
    if name == "digits-cnn":
        return load_dataset("builtin", model, count=count, purpose="evaluation", seed=seed)
    raise DataError(
        f"model {model.name!r} has no built-in held-out data",
        hint="pass --held-out DIR|FILE.npz|file.py:fn: images never used for calibration or --evaluation",
    )


def _digest(ds: Dataset) -> str:
    from packager.cache import hash_arrays

    return hash_arrays(ds.samples)


@dataclass
class _Data:
    calibration: Dataset
    training: Dataset
    guard: Dataset
    held_out: Dataset
    reference: np.ndarray
    sure: np.ndarray
    notes: list[str]


def _load_data(cfg: TuneConfig, model: LoadedModel, comp_distill: DistillConfig | None) -> _Data:
    import numpy as np

    from packager.compress.allocate import run_batched
    from packager.compress.distill import stack_samples
    from packager.data import load_dataset

    notes = []
    cal = load_dataset(cfg.calibration, model, count=cfg.calibration_count, purpose="calibration", seed=cfg.seed)
    train = cal
    if comp_distill is not None and comp_distill.samples:
        train = load_dataset(cfg.calibration, model, count=comp_distill.samples, purpose="calibration", seed=cfg.seed)
    guard = load_dataset(cfg.evaluation, model, count=cfg.eval_count, purpose="evaluation", seed=cfg.seed + 1)
    held = load_held_out(cfg.held_out, model, cfg.held_out_count, cfg.seed + 2)
    h = _digest(held)
    if h in (_digest(cal), _digest(train)):
        raise UsageError(
            "the held-out data is the calibration data; the floor must be checked on data pruning never saw",
            hint="pass --held-out with other images",
        )
    if _digest(guard) == h or set(map(_sample_key, guard.samples)) & set(map(_sample_key, held.samples)):
        guard = cal
        notes.append("the evaluation data overlaps the held-out data: sensitivity and guards use calibration data")
    if len(model.inputs) != 1:
        raise UsageError(f"mpk tune supports single-input models; this one takes {len(model.inputs)}")
    x = stack_samples(held.samples)
    ref = run_batched(model.module.eval(), x)
    flat = ref.reshape(len(ref), -1).astype(np.float64)
    p = np.exp(flat - flat.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    top2 = np.sort(p, axis=1)[:, -2:] if p.shape[1] > 1 else np.ones((len(p), 2))
    sure = (top2[:, 1] - top2[:, 0]) > SURE_MARGIN
    return _Data(cal, train, guard, held, ref, sure, notes)


def _sample_key(sample: tuple[Any, ...]) -> bytes:
    import hashlib

    return hashlib.sha256(b"".join(a.tobytes() for a in sample)).digest()


# --- metrics on the held-out data ------------------------------------------------------------------------


def _held_out_metrics(outs: np.ndarray, data: _Data, t: Trial, classifier: bool) -> None:
    import numpy as np

    from packager.verify import compute_metrics

    m = compute_metrics([data.reference], [outs], classifier=classifier, labels=data.held_out.labels)
    t.top1_agreement = float(m["top1_agreement"]) if m["top1_agreement"] is not None else 0.0
    t.top1_counted = m["top1_counted"]  # type: ignore[assignment]
    t.cosine, t.snr_db = float(m["cosine"] or 0.0), float(m["snr_db"] or 0.0)
    t.accuracy = m["accuracy"]
    if classifier and data.sure.any():
        ms = compute_metrics([data.reference[data.sure]], [outs[data.sure]], classifier=True)
        t.top1_agreement_sure = ms["top1_agreement"]
    del np


def _meets(t: Trial, floor: dict[str, float]) -> bool:
    return t.status == "ok" and all((t.metric(k) or 0) >= v for k, v in floor.items())


# --- the search -------------------------------------------------------------------------------------------


def run_tune(cfg: TuneConfig, out_dir: Path | None = None, *, progress: bool = True, echo: Any = None,
             executor: Any = None) -> TuneResult:  # fmt: skip
    """Search (or grid, or replay) and return every trial, the chosen one and what limited it.

    ``echo(str)`` receives one line per step and trial.

    ``executor`` runs a grid's trials elsewhere: ``executor.run(cfg, [(amount, scheme), ...], work, echo)``
    returns one Trial per pair, in that order (``mpk tune --ray``: :class:`packager.compress.tune_ray.RayTrials`).
    Only the grid (``target: channels``) has independent trials; the search is sequential (each amount is
    picked from the last pass or miss) and a replay is one variant, so both refuse an executor (UsageError).
    """
    import tempfile

    import torch

    from packager.export import get_exporter
    from packager.export.capabilities import resolve_scheme
    from packager.models import load_model

    t_start = time.monotonic()
    say: Callable[[str], None] = echo or (lambda s: None)
    exporter = get_exporter(cfg.backend)
    schemes = [resolve_scheme(cfg.backend, s) for s in cfg.schemes]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if executor is not None and not cfg.grid:
        raise UsageError(RAY_GRID_ONLY)
    model = load_model(cfg.model)
    _precheck(cfg, model)
    comp_distill = cfg.compression.distill if cfg.compression is not None else cfg.distill
    data = _load_data(cfg, model, comp_distill)
    for n in data.notes:
        say(f"note: {n}")
    classifier = model.task == "classification"
    clear = ""
    if classifier:
        clear = f"{metrics.top1_counted(data.reference)} with a clear fp32 top-1 (top-1 agreement counts these), "
    say(
        f"held-out: {len(data.held_out)} samples ({data.held_out.source}), {clear}{int(data.sure.sum())} where fp32 "
        f"is sure; guard: {len(data.guard)}; calibration: {len(data.calibration)}"
    )
    fp32_acc = None
    if data.held_out.labels is not None:
        fp32_acc = metrics.accuracy(data.reference, data.held_out.labels)
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="mpk-tune-"))
    res = TuneResult(cfg, [], None, fp32_acc, data.held_out.source, len(data.held_out), notes=list(data.notes))
    deadline = t_start + cfg.budget_seconds
    if cfg.search:
        _search(cfg, model, data, classifier, res, deadline, progress, say)
        _export_phase(cfg, model, data, classifier, res, schemes, exporter, work, deadline, progress, say)
    else:
        amounts = [None] if cfg.compression is not None else list(cfg.amount_list)
        if executor is not None:  # each (amount, scheme) elsewhere, on its own: a one-trial grid (tune_ray)
            res.trials = list(executor.run(cfg, [(a, s) for a in cfg.amount_list for s in schemes], work, say))
        for amount in amounts if executor is None else ():
            _grid_trials(cfg, model, data, classifier, res, amount, schemes, exporter, work, progress, say)
        _pareto(res.trials, next(iter(cfg.floor), "top1_agreement"), ("size_bytes", "latency_ms"))
        ok = [t for t in res.trials if t.meets_floor]
        key = (
            (lambda t: (t.size_bytes, t.latency_ms))
            if cfg.objective == "size"
            else (lambda t: (t.latency_ms, t.size_bytes))
        )
        res.chosen = min(ok, key=key) if ok else None
    res.seconds = round(time.monotonic() - t_start, 1)
    return res


def _precheck(cfg: TuneConfig, model: LoadedModel) -> None:
    """Every bad ratio / layer name refused before the first minute of work."""
    from packager.compress.recipe_io import check_compression

    if cfg.compression is not None:
        check_compression(model, cfg.compression)
        return
    if not cfg.search:
        for r in cfg.amount_list:
            check_compression(model, cfg.compression_for(r))


def _variant(
    cfg: TuneConfig,
    model: LoadedModel,
    data: _Data,
    comp: CompressionConfig,
    progress: bool,
    say: Callable[[str], None],
) -> Any:
    from packager.compress.recipe_io import apply_compression

    return apply_compression(
        model, comp, data.calibration, training=data.training, guard=data.guard, progress=progress, echo=say
    )


def _search(
    cfg: TuneConfig,
    model: LoadedModel,
    data: _Data,
    classifier: bool,
    res: TuneResult,
    deadline: float,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    import copy

    import torch

    from packager.compress.allocate import (
        Plan,
        allocate,
        limiting_groups,
        measure_sensitivity,
        most_sensitive,
        run_batched,
    )
    from packager.compress.distill import stack_samples
    from packager.compress.groups import find_groups
    from packager.compress.recipe_io import _bar
    from packager.compress.stats import channel_stats
    from packager.compress.structured import check_structured, group_scores

    base = cfg.structured_for(0.0, {})
    student = copy.deepcopy(model.module).eval()
    ex = tuple(model.example_inputs)
    graph = find_groups(student, ex, check_structured(student, base))
    cal_x = stack_samples(data.calibration.samples)
    stats = channel_stats(student, graph, cal_x, ex)
    scores = {g.name: group_scores(student, g, base.importance, stats) for g in graph.groups}
    guard_x = stack_samples(data.guard.samples[: cfg.sensitivity_samples])
    guard_ref = run_batched(student, guard_x)
    t0 = time.monotonic()
    rows = measure_sensitivity(
        student,
        ex,
        graph,
        scores,
        stats if base.compensate else None,
        guard_x,
        guard_ref,
        ratios=cfg.sensitivity_ratios,
        round_to=cfg.round_to,
        classifier=classifier,
        deadline=t0 + 0.5 * (deadline - t0),
        progress=_bar(progress, "sensitivity"),
    )
    measured = {r.group for r in rows}
    say(
        f"sensitivity: {len(rows)} cuts of {len(measured)}/{len(graph.groups)} groups in "
        f"{time.monotonic() - t0:.0f}s (on {len(guard_x)} guard samples)"
    )
    res.sensitivity = [dataclasses.asdict(r) for r in rows]
    res.most_sensitive = most_sensitive(rows)
    macs0, _ = graph.cost()
    plans: dict[float, Plan] = {}
    trials: dict[float, Trial] = {}

    def evaluate(a: float) -> Trial:
        plan = allocate(graph, rows, a, target=cfg.target, round_to=cfg.round_to)
        plans[a] = plan
        t = Trial(prune=a, scheme="pytorch-fp32", target=cfg.target, predicted_snr_db=plan.predicted_snr_db)
        t.per_layer = {g: r for g, r in plan.ratios.items() if r > 0}
        t0 = time.monotonic()
        try:
            comp = _variant(cfg, model, data, cfg.compression_for(a, t.per_layer), False, lambda s: None)
            pm = comp.model.module.eval()
            t.parameters = sum(p.numel() for p in pm.parameters())
            srep = comp.report.get("structured") or {}
            t.macs = int(srep.get("macs_after", macs0))
            t.mac_reduction = round(1 - t.macs / srep["macs_before"], 4) if srep.get("macs_before") else 0.0
            t.recovery = {
                k: v for k, v in (comp.report.get("recovery") or {}).items() if k in ("pruned", "batchnorm", "refit")
            }
            if "distill" in comp.report:
                t.recovery["distill"] = comp.report["distill"].get("guard")
            t.guard_top1_agreement = (comp.report.get("guard_agreement") or {}).get("top1_agreement")
            with torch.no_grad():
                outs = run_batched(pm, stack_samples(data.held_out.samples))
            _held_out_metrics(outs, data, t, classifier)
        except MpkError as e:
            t.status, t.error = "error", e.format_message().splitlines()[0]
        t.seconds = round(time.monotonic() - t0, 2)
        t.meets_floor = _meets(t, cfg.floor)
        trials[a] = t
        res.trials.append(t)
        say(_search_line(t))
        return t

    amounts = list(cfg.amount_list)
    lo, hi = -1, len(amounts)  # amounts[lo] passed (or none), amounts[hi] failed (or none)
    while hi - lo > 1 and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        if evaluate(amounts[mid]).meets_floor:
            lo = mid
        else:
            hi = mid
    # refine between the last pass and the first miss, down to a tenth of the amount (at least 0.5 points)
    a_lo = amounts[lo] if lo >= 0 else 0.0
    a_hi = amounts[hi] if hi < len(amounts) else None
    while (
        a_hi is not None
        and a_hi - a_lo > max(0.005, 0.1 * a_hi) + 1e-9
        and time.monotonic() < deadline - _reserve(trials)
    ):
        a = round((a_lo + a_hi) / 2, 4)
        if evaluate(a).meets_floor:
            a_lo = a
        else:
            a_hi = a
    passing = [t for t in res.trials if t.meets_floor]
    res.chosen = max(passing, key=lambda t: (t.mac_reduction, t.top1_agreement)) if passing else None
    failing = [a for a, t in trials.items() if not t.meets_floor and (res.chosen is None or a > res.chosen.prune)]
    if failing:
        first_fail = min(failing)
        res.limiting = limiting_groups(plans.get(res.chosen.prune) if res.chosen else None, plans[first_fail], rows)
    _pareto(res.trials, "top1_agreement", ("macs",))


def _reserve(trials: dict[float, Trial]) -> float:
    """Time to keep for one more trial: the slowest so far."""
    return max((t.seconds for t in trials.values()), default=0.0)


def _export_phase(
    cfg: TuneConfig,
    model: LoadedModel,
    data: _Data,
    classifier: bool,
    res: TuneResult,
    schemes: list[str],
    exporter: Any,
    work: Path,
    deadline: float,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    """The unpruned model and the chosen variant, exported per scheme and measured on the host runtime."""
    variants: list[tuple[float, dict[str, float]]] = [(0.0, {})]
    if res.chosen is not None:
        variants.append((res.chosen.prune, dict(res.chosen.per_layer)))
    for amount, per_layer in variants:
        comp = cfg.compression_for(amount, per_layer or None)
        compressed = None if comp.empty else _variant(cfg, model, data, comp, progress, lambda s: None)
        lm = compressed.model if compressed is not None else model
        srep = (compressed.report.get("structured") or {}) if compressed is not None else {}
        for scheme in schemes:
            t = Trial(prune=amount, scheme=scheme, target=cfg.target, per_layer=per_layer)
            t.macs = int(srep.get("macs_after", 0))
            t.mac_reduction = round(1 - srep["macs_after"] / srep["macs_before"], 4) if srep else 0.0
            _export_trial(cfg, lm, data, classifier, t, scheme, exporter, work, time.monotonic())
            res.trials.append(t)
            say(_trial_line(t))


def _grid_trials(
    cfg: TuneConfig,
    model: LoadedModel,
    data: _Data,
    classifier: bool,
    res: TuneResult,
    amount: float | None,
    schemes: list[str],
    exporter: Any,
    work: Path,
    progress: bool,
    say: Callable[[str], None],
) -> None:
    """One compression (a uniform ratio, or the replayed recipe's), exported per scheme."""
    comp = cfg.compression if amount is None else cfg.compression_for(amount)
    label = amount if amount is not None else _replay_amount(comp)
    compressed = None
    t0 = time.monotonic()
    err: Trial | None = None
    try:
        if not comp.empty:
            if comp.distill is not None:  # the trial's time caps training
                d = dataclasses.replace(comp.distill, max_seconds=min(comp.distill.max_seconds, cfg.trial_timeout))
                comp = dataclasses.replace(comp, distill=d)
            compressed = _variant(cfg, model, data, comp, progress, lambda s: None)
    except MpkError as e:
        err = Trial(prune=label, scheme=",".join(schemes), target=cfg.target, status="error")
        err.error = e.format_message().splitlines()[0]
    if err is not None:
        res.trials.append(err)
        say(_trial_line(err))
        return
    lm = compressed.model if compressed is not None else model
    srep = (compressed.report.get("structured") or {}) if compressed is not None else {}
    for scheme in schemes:
        t = Trial(prune=label, scheme=scheme, target="channels" if amount is not None else cfg.target)
        if srep:
            t.macs = int(srep["macs_after"])
            t.mac_reduction = round(1 - srep["macs_after"] / srep["macs_before"], 4)
        _export_trial(cfg, lm, data, classifier, t, scheme, exporter, work, t0)
        res.trials.append(t)
        say(_trial_line(t))
        t0 = time.monotonic()
    if compressed is not None and compressed.quantized is not None:
        # qat / mixed_precision: their already-int8 ExecuTorch model is an artifact of its own, as in mpk package
        t = Trial(prune=label, scheme=compressed.quantized_scheme or "int8", target=cfg.target)
        t.macs, t.mac_reduction = (
            (int(srep["macs_after"]), round(1 - srep["macs_after"] / srep["macs_before"], 4)) if srep else (0, 0.0)
        )
        _export_trial(cfg, lm, data, classifier, t, t.scheme, exporter, work, t0, quantized=compressed)
        res.trials.append(t)
        say(_trial_line(t))


def _replay_amount(comp: CompressionConfig) -> float:
    if comp.structured is not None:
        return comp.structured.ratio
    if comp.unstructured is not None:
        return comp.unstructured.amount
    return 0.0


def _export_trial(
    cfg: TuneConfig,
    lm: LoadedModel,
    data: _Data,
    classifier: bool,
    t: Trial,
    scheme: str,
    exporter: Any,
    work: Path,
    t0: float,
    *,
    quantized: Any = None,
) -> None:
    import numpy as np

    try:
        t.parameters = sum(p.numel() for p in lm.module.parameters())
        tdir = work / f"{t.target}{t.prune:g}-{scheme}"
        shutil.rmtree(tdir, ignore_errors=True)
        if quantized is not None:
            from packager.compress.recipe_io import export_quantized

            if cfg.backend != "executorch":
                raise UsageError(f"{scheme} is an ExecuTorch artifact; this replay's backend is {cfg.backend}")
            art = export_quantized(quantized, tdir)
        else:
            art = exporter.export(lm, scheme, data.calibration, tdir)
        _check_time(t0, cfg.trial_timeout, "export")
        t.artifact = str(art.path)
        t.size_bytes = _size(art.path)
        sess = exporter.open(art.path, threads=cfg.threads)
        outs = np.stack([np.asarray(sess.run(s)[0]) for s in data.held_out.samples])
        _held_out_metrics(outs.reshape(data.reference.shape), data, t, classifier)
        t.latency_ms = _latency(sess, lm.example_inputs, cfg.latency_iters, t0 + cfg.trial_timeout)
        _check_time(t0, cfg.trial_timeout, "latency")
    except _TrialTimeout as e:
        t.status, t.error = "timeout", str(e)
    except MpkError as e:
        t.status, t.error = "error", e.format_message().splitlines()[0]
    t.seconds = round(time.monotonic() - t0, 2)
    t.meets_floor = _meets(t, cfg.floor)


def _pareto(trials: list[Trial], acc_key: str, costs: tuple[str, ...]) -> None:
    """Mark trials (of the same scheme) no other ok trial beats on every cost and on accuracy at once."""
    ok = [t for t in trials if t.status == "ok"]
    for t in ok:
        t.pareto = not any(o is not t and o.scheme == t.scheme and _dominates(o, t, acc_key, costs) for o in ok)


def _dominates(o: Trial, t: Trial, acc_key: str, costs: tuple[str, ...]) -> bool:
    acc_o, acc_t = o.metric(acc_key) or 0, t.metric(acc_key) or 0
    no_worse = all(getattr(o, c) <= getattr(t, c) for c in costs) and acc_o >= acc_t
    better = any(getattr(o, c) < getattr(t, c) for c in costs) or acc_o > acc_t
    return no_worse and better


class _TrialTimeout(Exception):
    pass


def _check_time(t0: float, limit: float, phase: str) -> None:
    if time.monotonic() - t0 > limit:
        raise _TrialTimeout(f"trial exceeded {limit:g}s (after {phase})")


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


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


# --- rendering -------------------------------------------------------------------------------------------


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _search_line(t: Trial) -> str:
    if t.status != "ok":
        return f"  {t.target} -{t.prune:<5g} {t.status}: {t.error} ({t.seconds:.1f}s)"
    return (
        f"  {t.target} -{t.prune:<5g} MACs -{t.mac_reduction:.1%}  held-out top1 {t.top1_agreement:.3f} "
        f"(sure {_pct(t.top1_agreement_sure)})  SNR {t.snr_db:5.1f} dB (predicted {t.predicted_snr_db:.1f} on the "
        f"guard)  {'meets' if t.meets_floor else 'misses'} the floor  ({t.seconds:.0f}s)" + _steps(t)
    )


def _steps(t: Trial) -> str:
    """The guarded recovery steps of a search trial: agreement on the guard data before -> after, kept or not."""
    out = []
    bn = t.recovery.get("batchnorm") or {}
    if bn.get("before"):
        out.append(
            f"batchnorm {_pct(bn['before'].get('top1_agreement'))} -> {_pct(bn['after'].get('top1_agreement'))} "
            + ("kept" if bn.get("applied") else "undone")
        )
    elif bn:
        out.append(f"batchnorm skipped ({bn.get('reason')})")
    d = t.recovery.get("distill")
    if d:
        out.append(
            f"distill {_pct(d['before'].get('top1_agreement'))} -> {_pct(d['after'].get('top1_agreement'))} "
            + ("kept" if d.get("kept") else "undone")
        )
    return ("\n      guard: " + "; ".join(out)) if out else ""


def _trial_line(t: Trial) -> str:
    if t.status != "ok":
        return f"  prune {t.prune:<5g} {t.scheme:<12} {t.status}: {t.error} ({t.seconds:.1f}s)"
    acc = f" acc {t.accuracy:.4f}" if t.accuracy is not None else ""
    return (
        f"  prune {t.prune:<5g} {t.scheme:<12} size {t.size_bytes:>10,} B  latency {t.latency_ms:8.3f} ms  "
        f"top1 {t.top1_agreement:.4f}{acc}  ({t.seconds:.1f}s)"
    )


def format_result(res: TuneResult) -> str:
    """Search trials (MACs vs held-out agreement), export trials, the chosen variant and what limited it."""
    c = res.config
    lines = [f"held-out: {res.held_out_samples} samples, {res.held_out}"]
    search = [t for t in res.trials if t.scheme.startswith("pytorch")]
    if search:
        head = (
            f"{'remove':>7} {'MACs':>7} {'params':>10} {'top1':>6} {'sure':>6} {'cosine':>7} {'SNR':>6} "
            f"{'pred':>6} {'floor':>5} {'pareto':>6}"
        )
        lines += ["", f"search ({c.target}, PyTorch fp32 vs the original on the held-out data)", head, "-" * len(head)]
        for t in sorted(search, key=lambda t: t.prune):
            if t.status != "ok":
                lines.append(f"{t.prune:>7.3f} {t.status}: {t.error}")
                continue
            lines.append(
                f"{t.prune:>7.3f} {-t.mac_reduction:>+7.1%} {t.parameters:>10,} {t.top1_agreement:>6.3f} "
                f"{_pct(t.top1_agreement_sure):>6} {t.cosine:>7.4f} {t.snr_db:>6.1f} {t.predicted_snr_db or 0:>6.1f} "
                f"{'yes' if t.meets_floor else 'no':>5} {'*' if t.pareto else '':>6}"
            )
    exported = [t for t in res.trials if not t.scheme.startswith("pytorch")]
    if exported:
        head = (
            f"{'prune':>6} {'scheme':<12} {'MACs':>7} {'params':>10} {'size B':>11} {'lat ms':>9} "
            f"{'top1':>7} {'sure':>6} {'acc':>7} {'floor':>5} {'pareto':>6}"
        )
        lines += ["", f"exported ({c.backend}, host runtime)", head, "-" * len(head)]
        for t in exported:
            if t.status != "ok":
                lines.append(f"{t.prune:>6g} {t.scheme:<12} {t.status}: {t.error}")
                continue
            acc = f"{t.accuracy:.4f}" if t.accuracy is not None else "-"
            lines.append(
                f"{t.prune:>6g} {t.scheme:<12} {-t.mac_reduction:>+7.1%} {t.parameters:>10,} {t.size_bytes:>11,} "
                f"{t.latency_ms:>9.3f} {t.top1_agreement:>7.4f} {_pct(t.top1_agreement_sure):>6} {acc:>7} "
                f"{'yes' if t.meets_floor else 'no':>5} {'*' if t.pareto and not search else '':>6}"
            )
    floor = ", ".join(f"{k}>={v:g}" for k, v in c.floor.items())
    lines.append("")
    if res.chosen is not None:
        ch = res.chosen
        if ch.scheme.startswith("pytorch"):
            lines.append(
                f"chosen ({floor} on held-out): remove {ch.prune:g} of {c.target} -> MACs -{ch.mac_reduction:.1%}, "
                f"held-out top-1 agreement {ch.top1_agreement:.3f}"
            )
        else:
            lines.append(f"chosen ({c.objective}, {floor}): prune {ch.prune:g} + {ch.scheme}, {ch.size_bytes:,} B")
    else:
        lines.append(f"no variant met the floor ({floor})")
    if res.limiting:
        lines.append("limited by (cut further in the first plan that missed the floor; measured alone on the guard):")
        for d in res.limiting:
            snr = d["measured_snr_db"]
            lines.append(
                f"  {d['group']}: {d['ratio_passing']:.3f} -> {d['ratio_failing']:.3f} of its channels"
                + (f", SNR {snr:.1f} dB alone" if snr is not None else "")
            )
    if res.most_sensitive:
        lines.append(
            "most sensitive groups (smallest cut, alone): "
            + ", ".join(f"{d['group']} {d['measured_snr_db']:.1f} dB" for d in res.most_sensitive)
        )
    lines.append("latency: median on this host's runtime, for ranking only; measure phones with `mpk bench`")
    return "\n".join(lines)


def save_recipe(res: TuneResult, path: Path) -> dict[str, Any]:
    recipe = res.recipe()
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return recipe


def config_from_recipe(recipe: Recipe, **overrides: Any) -> TuneConfig:
    """A one-variant TuneConfig that re-runs a packaging recipe exactly: its model, first backend, schemes,
    data, seed and *every* compression section, parsed by the same code as ``mpk package``."""
    from packager.compress.recipe_io import parse_compression

    comp = recipe.compression
    if not isinstance(comp, CompressionConfig):  # a Recipe parses its section; a mapping is parsed the same way
        comp = parse_compression(comp, "recipe") if comp else CompressionConfig()
    kw: dict[str, Any] = {
        "model": recipe.model,
        "backend": recipe.backends[0],
        "schemes": tuple(recipe.schemes),
        "calibration": recipe.calibration,
        "calibration_count": recipe.calibration_count,
        "evaluation": recipe.evaluation,
        "eval_count": recipe.eval_count,
        "seed": recipe.seed,
        "compression": comp,
        "target": comp.structured.target if comp.structured is not None else "channels",
    }
    if recipe.threads is not None:
        kw["threads"] = recipe.threads
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TuneConfig(**kw)


def replay_config(path: Path, **overrides: Any) -> TuneConfig:
    """Read a saved recipe through :class:`packager.recipe.Recipe` (unknown keys refused) for a replay."""
    from packager.recipe import Recipe

    return config_from_recipe(Recipe.build(path), **overrides)


def result_json(res: TuneResult) -> dict[str, Any]:
    return {
        "held_out": {"source": res.held_out, "samples": res.held_out_samples},
        "trials": [dataclasses.asdict(t) for t in res.trials],
        "chosen": res.recipe() if res.chosen else None,
        "limiting": res.limiting,
        "most_sensitive": res.most_sensitive,
        "sensitivity": res.sensitivity,
        "notes": res.notes,
        "seconds": res.seconds,
    }
