"""Unstructured magnitude pruning, and an honest size report.

Zeroing 50% of the weights does **not** make a dense ``.pte``/``.onnx`` file
smaller or faster: the zeros are stored and multiplied like any other value
(XNNPACK and ONNX Runtime's default CPU kernels are dense). What shrinks is the
*compressed* size (app download, OTA delta), because runs of zeros compress
well. :func:`measure_sizes` reports both so nobody mistakes one for the other.
Structured pruning (:mod:`packager.compress.structured`) is what buys speed.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mpk.errors import UsageError
from packager.compress import check_layer_names, check_ratio

if TYPE_CHECKING:  # pragma: no cover
    import torch

ZSTD_LEVEL = 19


@dataclass(frozen=True)
class UnstructuredPruneConfig:
    """``amount=0.5, scope="global"`` zeroes the 50% smallest |w| across all chosen layers together.

    ``scope="local"`` zeroes ``amount`` of each layer separately. ``threshold=0.01`` instead zeroes every
    weight with |w| < 0.01 (an absolute cut; ``amount`` is then ignored and may be 0). ``layers=None``
    means every Conv and Linear weight.
    """

    amount: float = 0.0
    scope: Literal["local", "global"] = "global"
    layers: list[str] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "amount", check_ratio(self.amount, "unstructured amount"))
        if self.scope not in ("local", "global"):
            raise UsageError(f"unstructured scope must be 'local' or 'global', got {self.scope!r}")
        if self.threshold is not None:
            t = self.threshold
            if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t < 0:
                raise UsageError(
                    f"unstructured threshold must be a number >= 0, got {t!r}",
                    hint="weights with |w| below it are zeroed; a negative threshold means nothing",
                )
            object.__setattr__(self, "threshold", float(t))


@dataclass
class SparsityReport:
    """Per-layer and overall fraction of exact zeros in the pruned weights."""

    scope: str
    amount: float
    layers: list[dict[str, Any]] = field(default_factory=list)
    total_params: int = 0
    zero_params: int = 0
    threshold: float | None = None

    @property
    def sparsity(self) -> float:
        return self.zero_params / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sparsity"] = round(self.sparsity, 6)
        return d


@dataclass(frozen=True)
class SizeReport:
    """Bytes on disk vs bytes after zstd. Dense runtimes load ``dense_bytes``."""

    dense_bytes: int
    compressed_bytes: int
    codec: str = f"zstd-{ZSTD_LEVEL}"

    @property
    def ratio(self) -> float:
        return self.compressed_bytes / self.dense_bytes if self.dense_bytes else 1.0


def prunable_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Conv and Linear modules by qualified name: the layers magnitude pruning touches."""
    import torch.nn as nn

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))}


def prune_unstructured(model: torch.nn.Module, cfg: UnstructuredPruneConfig) -> SparsityReport:
    """Zero the smallest-|w| weights in place and make it permanent (no masks left behind).

    >>> # amount=0.5, scope="global" on a model with 1000 weights leaves exactly 500 zeros
    """
    import torch.nn.utils.prune as prune

    layers = prunable_layers(model)
    names = check_layer_names(cfg.layers, layers) if cfg.layers is not None else list(layers)
    if not names:
        raise UsageError("the model has no Conv or Linear layer to prune")
    if cfg.threshold is not None:
        import torch

        with torch.no_grad():
            for n in names:
                w = layers[n].weight
                w.masked_fill_(w.abs() < cfg.threshold, 0.0)
    elif cfg.amount > 0:
        params = [(layers[n], "weight") for n in names]
        if cfg.scope == "global":
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=cfg.amount)
        else:
            for mod, pname in params:
                prune.l1_unstructured(mod, pname, amount=cfg.amount)
        # remove() folds weight_orig * mask into a plain parameter so export sees an ordinary module
        for mod, pname in params:
            prune.remove(mod, pname)
    return sparsity_report(model, names, cfg)


def sparsity_report(model: torch.nn.Module, names: list[str], cfg: UnstructuredPruneConfig) -> SparsityReport:
    layers = prunable_layers(model)
    rep = SparsityReport(
        scope=cfg.scope if cfg.threshold is None else "threshold", amount=cfg.amount, threshold=cfg.threshold
    )
    for n in names:
        w = layers[n].weight.detach()
        zeros = int((w == 0).sum())
        rep.layers.append({"layer": n, "params": w.numel(), "zeros": zeros, "sparsity": round(zeros / w.numel(), 6)})
        rep.total_params += w.numel()
        rep.zero_params += zeros
    return rep


def compressed_size(data: bytes, level: int = ZSTD_LEVEL) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=level).compress(data))


def measure_sizes(target: Path | torch.nn.Module | dict) -> SizeReport:
    """Dense and zstd size of a saved artifact (file or directory) or of a module's state_dict.

    A directory (CoreML ``.mlpackage``) is measured as the concatenation of its
    files in sorted order, which is what an archive of it would hold.
    """
    if isinstance(target, (str, Path)):
        p = Path(target)
        if p.is_dir():
            data = b"".join(f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file())
        elif p.is_file():
            data = p.read_bytes()
        else:
            raise UsageError(f"no artifact at {p}")
    else:
        import torch

        sd = target.state_dict() if hasattr(target, "state_dict") else target
        buf = io.BytesIO()
        torch.save(sd, buf)
        data = buf.getvalue()
    return SizeReport(dense_bytes=len(data), compressed_bytes=compressed_size(data))
