"""The ``compression:`` recipe section: parse and validate it, apply it to a model, export its int8 result.

YAML (every key optional; an absent step is not run)::

    compression:
      structured:   {ratio: 0.3, importance: l1, global: false, ignore: null, round_to: 8, per_layer: {}}
      unstructured: {amount: 0.5, scope: global, layers: null}
      distill:      {epochs: 3, lr: 0.01, optimizer: sgd, temperature: 4.0, alpha: 0.7,
                     batch_size: 32, max_seconds: 600, seed: 0, augment: crop_flip,
                     samples: null, freeze_bn: true}
      qat:          {epochs: 2, lr: 0.001, ...same keys as distill..., per_channel: true}
      mixed_precision: {min_snr_db: 30, min_top1_agreement: null, min_cosine: null, max_float_layers: null}

Order of application: structured pruning -> unstructured pruning -> distillation
from the unpruned model -> (qat | mixed_precision) for the ExecuTorch int8
artifact. Unknown keys are errors with their path, all reported at once.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpk.errors import ConfigError, UsageError
from mpk.registry import suggest
from packager.compress.distill import DistillConfig
from packager.compress.qat import QATConfig
from packager.compress.structured import StructuredPruneConfig
from packager.compress.unstructured import UnstructuredPruneConfig

if TYPE_CHECKING:  # pragma: no cover
    from packager.types import Dataset, ExportedArtifact, LoadedModel

_STRUCT_KEYS = {"ratio", "importance", "global", "ignore", "round_to", "per_layer", "max_layer_ratio"}
_UNSTRUCT_KEYS = {"amount", "scope", "layers"}
_DISTILL_KEYS = {f.name for f in dataclasses.fields(DistillConfig)}
_QAT_KEYS = _DISTILL_KEYS | {"per_channel"}
_MIXED_KEYS = {"min_snr_db", "min_top1_agreement", "min_cosine", "max_float_layers"}
SECTIONS = {
    "structured": _STRUCT_KEYS,
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
    unstructured: UnstructuredPruneConfig | None = None
    distill: DistillConfig | None = None
    qat: QATConfig | None = None
    mixed_precision: MixedPrecisionConfig | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

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
            }
        if self.unstructured:
            u = self.unstructured
            out["unstructured"] = {"amount": u.amount, "scope": u.scope, "layers": u.layers}
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
        return StructuredPruneConfig(**v)
    if key == "unstructured":
        if "amount" not in val:
            raise UsageError("amount: required")
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
    progress: bool = True,
) -> CompressedModel:
    """Apply ``cfg`` to a copy of ``model`` (the original stays the fp32 teacher and reference).

    ``calibration`` drives Taylor importance, sensitivity and PTQ; ``training`` (default: ``calibration``)
    is what distillation and QAT train on; load it with ``count=cfg.distill.samples`` when that is set.
    """
    import torch

    from packager.compress.distill import stack_samples

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
    if cfg.structured:
        from packager.compress.structured import prune_structured

        report["structured"] = prune_structured(student, ex, cfg.structured, calibration=batches[:16]).to_dict()
    if cfg.unstructured:
        from packager.compress.unstructured import prune_unstructured

        report["unstructured"] = prune_unstructured(student, cfg.unstructured).to_dict()
    if cfg.distill:
        from packager.compress.distill import distill

        report["distill"] = distill(
            student, teacher, stack_samples(training.samples), labels, cfg.distill, progress=progress
        ).to_dict()
    if cfg.unstructured and cfg.distill:
        # fine-tuning regrows pruned weights; re-apply the mask so the reported sparsity is the shipped one
        from packager.compress.unstructured import prune_unstructured

        report["unstructured"] = prune_unstructured(student, cfg.unstructured).to_dict()
    student.eval()
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
