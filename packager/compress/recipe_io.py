"""The ``compression:`` recipe section: parse and validate it, apply it to a model, export its int8 result.

YAML (every key optional; an absent step is not run, except ``recovery``, whose defaults apply whenever
structured pruning runs)::

    compression:
      structured:   {ratio: 0.3, importance: l1|l2|taylor|energy, global: false, ignore: null, round_to: 8,
                     per_layer: {}, max_layer_ratio: 0.9, target: channels|macs|params,
                     sensitivity_ratios: [0.125, 0.25, 0.5, 0.75], compensate: true}
      recovery:     {refit: false, ridge: 0.001, bn: auto|relative|absolute|off, bn_blend: 1.0}
      unstructured: {amount: 0.5, scope: global, layers: null, threshold: null}
      distill:      {epochs: 3, lr: 0.01, optimizer: sgd, temperature: 4.0, alpha: 0.7,
                     batch_size: 32, max_seconds: 600, seed: 0, augment: crop_flip|strong|crop|none,
                     samples: null, freeze_bn: true, data: images|synthetic|both,
                     synthetic_count: 64, synthetic_seconds: 120, guard: true}
      qat:          {epochs: 2, lr: 0.001, ...same keys as distill..., per_channel: true}
      mixed_precision: {min_snr_db: 30, min_top1_agreement: null, min_cosine: null, max_float_layers: null}

Order of application: structured pruning (with ``target: macs|params``: per-group sensitivity measured,
then allocated) -> recovery (refit, BatchNorm re-estimation, guarded) -> unstructured pruning ->
distillation from the unpruned model (guarded) -> (qat | mixed_precision) for the ExecuTorch int8
artifact. Unknown keys are errors with their path, all reported at once.

*Guard data*: the guarded steps (BatchNorm re-estimation, distillation) and the sensitivity measurement
compare with the original model on ``guard`` inputs (``mpk tune`` passes its evaluation views; ``mpk
package`` the calibration data). They never see ``mpk tune``'s held-out views.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpk.errors import ConfigError, UsageError
from mpk.registry import suggest
from packager.compress.distill import DistillConfig
from packager.compress.qat import QATConfig
from packager.compress.recovery import RecoveryConfig
from packager.compress.structured import StructuredPruneConfig
from packager.compress.unstructured import UnstructuredPruneConfig

if TYPE_CHECKING:  # pragma: no cover
    from packager.types import Dataset, ExportedArtifact, LoadedModel

_STRUCT_KEYS = {
    "ratio",
    "importance",
    "global",
    "ignore",
    "round_to",
    "per_layer",
    "max_layer_ratio",
    "target",
    "sensitivity_ratios",
    "compensate",
}
_UNSTRUCT_KEYS = {"amount", "scope", "layers", "threshold"}
_RECOVERY_KEYS = {f.name for f in dataclasses.fields(RecoveryConfig)}
_DISTILL_KEYS = {f.name for f in dataclasses.fields(DistillConfig)}
_QAT_KEYS = _DISTILL_KEYS | {"per_channel"}
_MIXED_KEYS = {"min_snr_db", "min_top1_agreement", "min_cosine", "max_float_layers"}
SECTIONS = {
    "structured": _STRUCT_KEYS,
    "recovery": _RECOVERY_KEYS,
    "unstructured": _UNSTRUCT_KEYS,
    "distill": _DISTILL_KEYS,
    "qat": _QAT_KEYS,
    "mixed_precision": _MIXED_KEYS,
}


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """Error budget for mixed precision; at least one bound. ``min_snr_db=30``: logits within 30 dB of fp32."""

    min_snr_db: float | None = None
    min_top1_agreement: float | None = None
    min_cosine: float | None = None
    max_float_layers: int | None = None

    def budget(self) -> dict[str, float]:
        b = {"snr_db": self.min_snr_db, "top1_agreement": self.min_top1_agreement, "cosine": self.min_cosine}
        return {k: float(v) for k, v in b.items() if v is not None}


@dataclass(frozen=True)
class CompressionConfig:
    structured: StructuredPruneConfig | None = None
    recovery: RecoveryConfig | None = None
    unstructured: UnstructuredPruneConfig | None = None
    distill: DistillConfig | None = None
    qat: QATConfig | None = None
    mixed_precision: MixedPrecisionConfig | None = None

    @property
    def empty(self) -> bool:
        # recovery alone does nothing: it only follows structured pruning
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self) if f.name != "recovery")

    def to_dict(self) -> dict[str, Any]:
        """The YAML form; ``parse_compression(cfg.to_dict())`` gives back an equal config."""
        out: dict[str, Any] = {}
        if self.structured:
            s = self.structured
            out["structured"] = {
                "ratio": s.ratio,
                "importance": s.importance,
                "global": s.global_,
                "ignore": list(s.ignore) if s.ignore is not None else None,
                "round_to": s.round_to,
                "per_layer": dict(s.per_layer),
                "max_layer_ratio": s.max_layer_ratio,
                "target": s.target,
                "sensitivity_ratios": list(s.sensitivity_ratios),
                "compensate": s.compensate,
            }
        if self.recovery:
            out["recovery"] = dataclasses.asdict(self.recovery)
        if self.unstructured:
            u = self.unstructured
            out["unstructured"] = {"amount": u.amount, "scope": u.scope, "layers": u.layers, "threshold": u.threshold}
        if self.distill:
            out["distill"] = dataclasses.asdict(self.distill)
        if self.qat:
            out["qat"] = {**dataclasses.asdict(self.qat.train), "per_channel": self.qat.per_channel}
        if self.mixed_precision:
            out["mixed_precision"] = dataclasses.asdict(self.mixed_precision)
        return out


def parse_compression(raw: Any, source: str = "recipe", prefix: str = "compression") -> CompressionConfig:
    """Validate a ``compression:`` mapping into a :class:`CompressionConfig`; ConfigError lists every problem."""
    if raw is None:
        return CompressionConfig()
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"{prefix}: expected a mapping, got {type(raw).__name__}"])
    problems: list[str] = []
    built: dict[str, Any] = {}
    for key, val in raw.items():
        where = f"{prefix}.{key}"
        if key not in SECTIONS:
            problems.append(f"{where}: unknown key; " + suggest(str(key), list(SECTIONS), "section").split("; ", 1)[-1])
            continue
        if val is None:
            continue
        if not isinstance(val, dict):
            problems.append(f"{where}: expected a mapping, got {type(val).__name__}")
            continue
        unknown = [k for k in val if k not in SECTIONS[key]]
        for k in unknown:
            hint = suggest(str(k), sorted(SECTIONS[key]), "key").split("; ", 1)[-1]
            problems.append(f"{where}.{k}: unknown key; {hint}")
        if unknown:
            continue
        try:
            built[key] = _build(key, val)
        except UsageError as e:
            problems.append(f"{where}: {e.message}")
        except TypeError as e:
            problems.append(f"{where}: {e}")
    if "qat" in built and "mixed_precision" in built:
        problems.append(f"{prefix}: qat and mixed_precision both choose the int8 model; keep one")
    if problems:
        raise ConfigError(source, problems)
    return CompressionConfig(**built)


def _build(key: str, val: dict[str, Any]) -> Any:
    if key == "structured":
        v = dict(val)
        if "ratio" not in v:
            raise UsageError("ratio: required")
        v["global_"] = v.pop("global", False)
        if v.get("per_layer") is None:
            v["per_layer"] = {}
        if "sensitivity_ratios" in v:
            r = v["sensitivity_ratios"]
            if not isinstance(r, (list, tuple)):
                raise UsageError(f"sensitivity_ratios: expected a list of ratios, got {r!r}")
            v["sensitivity_ratios"] = tuple(r)
        return StructuredPruneConfig(**v)
    if key == "recovery":
        return RecoveryConfig(**val)
    if key == "unstructured":
        if "amount" not in val and val.get("threshold") is None:
            raise UsageError("amount or threshold: required")
        return UnstructuredPruneConfig(**val)
    if key == "distill":
        return DistillConfig(**val)
    if key == "qat":
        v = dict(val)
        per_channel = bool(v.pop("per_channel", True))
        base = dataclasses.asdict(QATConfig().train)
        return QATConfig(train=DistillConfig(**{**base, **v}), per_channel=per_channel)
    mp = MixedPrecisionConfig(**val)
    if not mp.budget():
        raise UsageError("give at least one of min_snr_db, min_top1_agreement, min_cosine")
    return mp


@dataclass
class CompressedModel:
    """The result of :func:`apply_compression`.

    ``model``: the pruned/distilled fp32 model, exported like any model for every backend and scheme.
    ``quantized``: with qat or mixed_precision, the already-int8 (q/dq) module for ExecuTorch, exported by
    :func:`export_quantized`; ``quantized_scheme`` names it ("int8-qat" or "int8-mixed").
    ``report``: the manifest's ``compression`` section.
    """

    model: LoadedModel
    report: dict[str, Any]
    quantized: Any = None
    quantized_scheme: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _batches(ds: Dataset, limit: int | None = None) -> list[tuple[Any, ...]]:
    import numpy as np
    import torch

    samples = ds.samples[:limit] if limit else ds.samples
    return [tuple(torch.from_numpy(np.asarray(a)) for a in s) for s in samples]


def check_compression(model: LoadedModel, cfg: CompressionConfig) -> None:
    """Name checks that need the module (layer names, channels left), before any training or export."""
    from packager.compress import check_layer_names
    from packager.compress.structured import check_structured
    from packager.compress.unstructured import prunable_layers

    if cfg.structured:
        check_structured(model.module, cfg.structured)
    if cfg.unstructured and cfg.unstructured.layers:
        check_layer_names(cfg.unstructured.layers, prunable_layers(model.module))


def apply_compression(
    model: LoadedModel,
    cfg: CompressionConfig,
    calibration: Dataset,
    *,
    training: Dataset | None = None,
    guard: Dataset | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> CompressedModel:
    """Apply ``cfg`` to a copy of ``model`` (the original stays the fp32 teacher and reference).

    ``calibration`` drives channel statistics, Taylor importance, sensitivity and PTQ; ``training`` (default:
    ``calibration``) is what BatchNorm re-estimation, distillation and QAT use; load it with
    ``count=cfg.distill.samples`` when that is set. ``guard`` (default: ``calibration``) is what sensitivity
    and the guarded steps compare on. ``echo(line)`` receives one line per step.
    """
    import torch

    from packager.compress.distill import stack_samples

    say = echo or (lambda line: None)
    check_compression(model, cfg)
    report: dict[str, Any] = {"config": cfg.to_dict()}
    if cfg.empty:
        return CompressedModel(model, report)
    student = copy.deepcopy(model.module).eval()
    teacher = model.module.eval()
    ex = tuple(model.example_inputs)
    batches = _batches(calibration)
    training = training if training is not None else calibration
    labels = torch.from_numpy(training.labels).long() if training.labels is not None else None
    classifier = model.task == "classification"
    single = len(model.inputs) == 1
    guard_x = stack_samples((guard or calibration).samples) if single else None
    guard_ref = _outputs(teacher, guard_x) if guard_x is not None else None
    if cfg.structured:
        report.update(
            _structured(teacher, student, ex, cfg, batches, training, guard_x, guard_ref, classifier, progress, say)
        )
    if cfg.unstructured:
        from packager.compress.unstructured import prune_unstructured

        report["unstructured"] = prune_unstructured(student, cfg.unstructured).to_dict()
    if cfg.distill:
        report["distill"] = _distill(
            student, teacher, training, labels, cfg.distill, ex, guard_x, guard_ref, classifier, progress, say
        )
    if cfg.unstructured and cfg.distill:
        # fine-tuning regrows pruned weights; re-apply the mask so the reported sparsity is the shipped one
        from packager.compress.unstructured import prune_unstructured

        report["unstructured"] = prune_unstructured(student, cfg.unstructured).to_dict()
    student.eval()
    if guard_x is not None and guard_ref is not None:
        from packager.compress.recovery import agreement

        report["guard_agreement"] = agreement(student, guard_x, guard_ref, classifier)
    params = sum(p.numel() for p in student.parameters())
    # a new sha256: the pipeline's artifact cache keys on it, and the pruned model must never hit the original's entry
    sha = _sha256(student, cfg)
    out = CompressedModel(dataclasses.replace(model, module=student, exported_program=None, sha256=sha), report)
    report["sha256"] = sha
    report["parameters"] = {"original": sum(p.numel() for p in teacher.parameters()), "compressed": params}
    if cfg.qat:
        from packager.compress.qat import qat_int8

        q, rep = qat_int8(
            student, ex, stack_samples(training.samples), labels, teacher=teacher, cfg=cfg.qat, progress=progress
        )
        report["qat"] = rep.to_dict()
        out.quantized, out.quantized_scheme = q, "int8-qat"
    elif cfg.mixed_precision:
        from packager.compress.qat import capture
        from packager.compress.sensitivity import layer_sensitivity, plan_mixed_precision, to_manifest

        captured = capture(student, ex)  # once: every per-layer trial quantizes a copy of this graph
        sens_batches = batches[:32]  # observers settle within tens of samples; each trial re-runs them
        sens = layer_sensitivity(student, ex, sens_batches, captured=captured)
        plan = plan_mixed_precision(
            student,
            ex,
            batches,
            cfg.mixed_precision.budget(),
            evaluation=sens_batches,
            sensitivities=sens,
            max_float_layers=cfg.mixed_precision.max_float_layers,
            captured=captured,
        )
        report["sensitivity"] = to_manifest(sens)
        report["mixed_precision"] = plan.to_dict()
        out.quantized = plan.module
        out.quantized_scheme = "int8-mixed"
    if out.quantized is not None:
        out.quantized = frozen_quantized(out.quantized)
    return out


def _outputs(module: Any, inputs: Any) -> Any:
    from packager.compress.allocate import run_batched

    return run_batched(module.eval(), inputs)


def _structured(
    teacher: Any,
    student: Any,
    ex: tuple[Any, ...],
    cfg: CompressionConfig,
    batches: list[tuple[Any, ...]],
    training: Dataset,
    guard_x: Any,
    guard_ref: Any,
    classifier: bool,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Structured pruning (allocated by sensitivity when the target is macs/params), then recovery."""
    import time

    import torch

    from packager.compress.allocate import allocate, measure_sensitivity
    from packager.compress.distill import stack_samples
    from packager.compress.groups import find_groups
    from packager.compress.recovery import Tracker, agreement, bn_step, refit_consumers
    from packager.compress.stats import channel_stats
    from packager.compress.structured import check_structured, group_scores, prune_structured, taylor_grads

    s = cfg.structured
    assert s is not None
    rec = cfg.recovery or RecoveryConfig()
    out: dict[str, Any] = {}
    ignore = check_structured(student, s)
    graph = find_groups(student, ex, ignore)
    calib_x = torch.cat([b[0] for b in batches]) if batches and len(batches[0]) == 1 else None
    stats = channel_stats(student, graph, calib_x, ex) if (s.importance == "energy" or s.compensate) else None
    ratios = None
    plan = None
    if s.allocated:
        if guard_x is None:
            raise UsageError(f"structured target {s.target!r} measures sensitivity; it needs a single-input model")
        grads = taylor_grads(student, batches[:16], None) if s.importance == "taylor" else None
        scores = {g.name: group_scores(student, g, s.importance, stats, grads) for g in graph.groups}
        t0 = time.monotonic()
        rows = measure_sensitivity(
            student,
            ex,
            graph,
            scores,
            stats if s.compensate else None,
            guard_x,
            guard_ref,
            ratios=s.sensitivity_ratios,
            round_to=s.round_to,
            classifier=classifier,
            progress=_bar(progress, "sensitivity"),
        )
        plan = allocate(graph, rows, s.ratio, target=s.target, round_to=s.round_to)
        ratios = plan.ratios
        say(
            f"sensitivity: {len(rows)} cuts of {len(graph.groups)} groups measured in {time.monotonic() - t0:.0f}s; "
            f"plan removes {plan.mac_reduction:.1%} of MACs, predicted SNR {plan.predicted_snr_db:.1f} dB"
        )
        out["sensitivity_rows"] = [dataclasses.asdict(r) for r in rows]
    tracker = Tracker()
    rep = prune_structured(
        student, ex, s, calibration=batches[:16], ratios=ratios, stats=stats, tracker=tracker, graph=graph
    )
    d = rep.to_dict()
    if plan is not None:
        d["plan"] = plan.to_dict()
    d["channel_stats"] = stats.source if stats is not None else None
    out["structured"] = d
    recovery: dict[str, Any] = {"config": dataclasses.asdict(rec)}
    if guard_x is not None:
        recovery["pruned"] = agreement(student, guard_x, guard_ref, classifier)
        say(f"pruned: {_fmt_agreement(recovery['pruned'])} on the guard data")
    train_x = stack_samples(training.samples) if len(training.samples[0]) == 1 else None
    if rec.refit and train_x is not None:
        consumers = sorted({c for g in graph.groups for c in g.consumers})
        recovery["refit_residual"] = refit_consumers(teacher, student, tracker, consumers, train_x, ridge=rec.ridge)
        if guard_x is not None:
            recovery["refit"] = agreement(student, guard_x, guard_ref, classifier)
    if guard_x is not None and train_x is not None:
        bn = bn_step(teacher, student, tracker, train_x, guard_x, guard_ref, rec, classifier=classifier)
        recovery["batchnorm"] = bn.to_dict()
        if bn.before:
            say(f"batchnorm: {bn.reason} ({_fmt_agreement(bn.before)} -> {_fmt_agreement(bn.after)})")
        else:
            say(f"batchnorm: skipped ({bn.reason})")
    out["recovery"] = recovery
    return out


def _fmt_agreement(m: dict[str, Any]) -> str:
    t = m.get("top1_agreement")
    return (f"top-1 agreement {t:.3f}, " if t is not None else "") + f"cosine {float(m.get('cosine') or 0):.4f}"


def _bar(enabled: bool, what: str) -> Callable[[int, int, str], None] | None:
    """A one-line progress callback on stderr (rich is too heavy for a loop of a hundred steps)."""
    if not enabled:
        return None
    import sys

    def f(i: int, n: int, label: str) -> None:
        end = "\n" if i >= n else ""
        sys.stderr.write(f"\r  {what} {i}/{n} {label[:60]:<60}{end}")
        sys.stderr.flush()

    return f


def _distill(
    student: Any,
    teacher: Any,
    training: Dataset,
    labels: Any,
    dcfg: DistillConfig,
    ex: tuple[Any, ...],
    guard_x: Any,
    guard_ref: Any,
    classifier: bool,
    progress: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Distillation on images, synthetic images or both; guarded (undone when agreement on the guard drops)."""
    import copy

    import torch

    from packager.compress.distill import distill, stack_samples
    from packager.compress.recovery import agreement, not_worse

    inputs = stack_samples(training.samples) if dcfg.data != "synthetic" else None
    synth_rep = None
    if dcfg.data in ("synthetic", "both"):
        from packager.compress.synthesize import SynthesisConfig, synthesize

        scfg = SynthesisConfig(count=dcfg.synthetic_count, max_seconds=dcfg.synthetic_seconds, seed=dcfg.seed)
        synth, srep = synthesize(teacher, tuple(ex[0].shape), scfg, progress=_steps_bar(progress, "synthesis"))
        synth_rep = srep.to_dict()
        say(f"synthesis: {srep.images} images from {srep.batchnorms} BatchNorms in {srep.seconds:.0f}s")
        inputs = synth if inputs is None else torch.cat([inputs, synth])
        if labels is not None:
            labels = None  # synthetic images have no labels; the teacher's outputs are the target
    before = agreement(student, guard_x, guard_ref, classifier) if guard_x is not None and dcfg.guard else None
    saved = copy.deepcopy(student.state_dict()) if before is not None else None
    rep = distill(student, teacher, inputs, labels, dcfg, progress=progress).to_dict()
    rep["synthetic"] = synth_rep
    if before is not None:
        after = agreement(student, guard_x, guard_ref, classifier)
        kept = not_worse(after, before)
        if not kept:
            student.load_state_dict(saved)
        rep["guard"] = {"before": before, "after": after, "kept": kept}
        say(
            f"distill: {_fmt_agreement(before)} -> {_fmt_agreement(after)} on the guard data; "
            + ("kept" if kept else "undone (it lowered agreement)")
        )
    return rep


def _steps_bar(enabled: bool, what: str) -> Callable[[int, int, float], None] | None:
    """:func:`_bar` for a loop that reports a loss per step."""
    bar = _bar(enabled, f"{what} step")
    if bar is None:
        return None
    return lambda i, n, loss: bar(i, n, f"loss {loss:.4f}")


def _sha256(module: Any, cfg: CompressionConfig) -> str:
    import json

    from packager.models.loaders import state_dict_sha256

    return state_dict_sha256(module, extra=json.dumps(cfg.to_dict(), sort_keys=True).encode())


def frozen_quantized(gm: Any) -> Any:
    """Wrap a converted PT2E graph so ``.eval()``/``.train()`` are no-ops (exporters call ``module.eval()``;
    an exported graph refuses mode switches, and its mode is fixed at conversion anyway)."""
    import torch

    class FrozenQuantized(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            return self.inner(*args)

        def train(self, mode: bool = True) -> FrozenQuantized:
            return self

    return FrozenQuantized(gm)


def export_quantized(compressed: CompressedModel, out_dir: Path) -> ExportedArtifact | None:
    """Lower ``compressed.quantized`` with the ExecuTorch exporter (as already-quantized: no second PTQ).

    Returns an artifact whose ``scheme`` is ``compressed.quantized_scheme``; None when there is nothing to export.
    """
    if compressed.quantized is None:
        return None
    from packager.export import get_exporter

    qmodel = dataclasses.replace(
        compressed.model, module=compressed.quantized, name=f"{compressed.model.name}-{compressed.quantized_scheme}"
    )
    art = get_exporter("executorch").export(qmodel, "fp32", None, Path(out_dir))
    art.scheme = compressed.quantized_scheme or "int8"
    art.details = {**art.details, "quantizer": {"name": "XNNPACKQuantizer", "per_channel": True, "mode": art.scheme}}
    return art


def load_compression_file(path: Path) -> tuple[CompressionConfig, dict[str, Any]]:
    """Read a recipe YAML and return its ``compression`` section plus the whole mapping (for ``model`` etc.)."""
    from mpk.yamlio import load_yaml

    p = Path(path)
    raw = load_yaml(p, what="recipe file") or {}  # exit 2 on unreadable, non-UTF-8, bad or duplicate keys
    if not isinstance(raw, dict):
        raise ConfigError(str(p), ["expected a mapping at the top level"])
    return parse_compression(raw.get("compression"), str(p)), raw


def compression_overrides(
    base: dict[str, Any] | CompressionConfig | None,
    *,
    prune: float | None = None,
    method: str | None = None,
    scope: str | None = None,
    threshold: float | None = None,
    target: str | None = None,
    distill_minutes: float | None = None,
) -> dict[str, Any] | None:
    """The recipe's ``compression`` mapping with ``mpk package``'s pruning flags applied on top.

    ``--prune 0.3`` sets the ratio of ``--prune-method`` (structured by default; ``--prune-target macs``
    makes it a MAC fraction allocated by sensitivity), ``--prune-scope`` its global/local ranking,
    ``--prune-threshold`` an absolute unstructured cut, ``--distill-minutes`` a distillation time cap (a
    distill section with the defaults is added when the recipe has none). Every value is checked here, so a
    bad one exits 2 before any work:

    >>> compression_overrides({"distill": {"epochs": 5}}, prune=0.3, distill_minutes=2)
    {'distill': {'epochs': 5, 'max_seconds': 120.0}, 'structured': {'ratio': 0.3}}
    """
    from packager.compress import check_ratio

    if isinstance(base, CompressionConfig):  # a Recipe holds its section parsed; the flags edit the mapping
        base = base.to_dict()
    given = [prune, method, scope, threshold, target, distill_minutes]
    if all(v is None for v in given):
        return base
    out: dict[str, Any] = copy.deepcopy(base) if base else {}
    if method is not None and method not in ("structured", "unstructured"):
        raise UsageError(suggest(str(method), ["structured", "unstructured"], "prune method"))
    if scope is not None and scope not in ("global", "local"):
        raise UsageError(suggest(str(scope), ["global", "local"], "prune scope"))
    if prune is not None:
        check_ratio(prune, "--prune")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
            raise UsageError(f"--prune-threshold must be a number >= 0, got {threshold!r}")
        if threshold < 0:
            raise UsageError(
                f"--prune-threshold must be >= 0, got {threshold!r}", hint="weights with |w| below it are zeroed"
            )
        if method == "structured":
            raise UsageError("--prune-threshold is an unstructured cut; it cannot go with --prune-method structured")
        method = "unstructured"
    if target is not None:
        from packager.compress.structured import TARGETS

        if target not in TARGETS:
            raise UsageError(suggest(str(target), TARGETS, "prune target"))
        if method == "unstructured":
            raise UsageError("--prune-target applies to structured pruning")
    if distill_minutes is not None and (
        isinstance(distill_minutes, bool) or not isinstance(distill_minutes, (int, float)) or not distill_minutes > 0
    ):
        raise UsageError(f"--distill-minutes must be > 0, got {distill_minutes!r}")
    method = method or ("unstructured" if "unstructured" in out and "structured" not in out else "structured")
    pruning_flags = prune is not None or scope is not None or threshold is not None or target is not None
    if pruning_flags:
        section = dict(out.get(method) or {})
        if method == "structured":
            if prune is not None:
                section["ratio"] = prune
            elif "ratio" not in section:
                raise UsageError(
                    "--prune-scope/--prune-target need --prune RATIO (or a structured ratio in the recipe)"
                )
            if scope is not None:
                section["global"] = scope == "global"
            if target is not None:
                section["target"] = target
        else:
            if prune is not None:
                section["amount"] = prune
            if scope is not None:
                section["scope"] = scope
            if threshold is not None:
                section["threshold"] = float(threshold)
            if "amount" not in section and section.get("threshold") is None:
                raise UsageError("--prune-method unstructured needs --prune AMOUNT or --prune-threshold X")
        out[method] = section
    if distill_minutes is not None:
        d = dict(out.get("distill") or {})
        d["max_seconds"] = float(distill_minutes) * 60.0
        if "epochs" not in d:
            d["epochs"] = 1000  # the time cap ends it
        out["distill"] = d
    return out
