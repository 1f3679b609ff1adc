"""PT2E int8 for the ExecuTorch/XNNPACK path: post-training (PTQ) and quantization-aware training (QAT).

QAT inserts fake-quantize nodes (int8 per-channel weights, int8 per-tensor
activations, the numerics XNNPACK runs) into the exported graph and trains
*through* them, so the weights learn to sit where rounding hurts least. The
training signal is the same distillation loss as pruning recovery, with the
fp32 model as teacher, so it also works without labels.

Flow (torchao 0.18 / executorch 1.4 import paths)::

    gm = torch.export.export(model, example_inputs).module()
    gm = prepare_qat_pt2e(gm, XNNPACKQuantizer().set_global(
             get_symmetric_quantization_config(is_per_channel=True, is_qat=True)))
    ... train gm ...
    gm = convert_pt2e(gm)                       # q/dq pairs around int8 ops
    to_edge_transform_and_lower(torch.export.export(gm, ...), partitioner=[XnnpackPartitioner()])

The converted module is lowered by the pipeline's ExecuTorch exporter as an
already-quantized model (:func:`packager.compress.recipe_io.export_quantized`);
it must not be quantized a second time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpk.errors import ModelError
from packager.compress.distill import DistillConfig, DistillReport, train_student

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class QATConfig:
    """Training settings for QAT; lower lr than pruning recovery since weights only need nudging."""

    train: DistillConfig = field(default_factory=lambda: DistillConfig(epochs=2, lr=1e-3, optimizer="sgd"))
    per_channel: bool = True


def _owner(node: Any) -> str:
    """Qualified name of the innermost nn.Module a graph node came from ('' for the root)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    # torch.export writes "L['self'].features.0" in some versions and "features.0" in others
    return path.replace("L['self'].", "").replace("L['self']", "")


def _under(name: str, scopes: set[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in scopes)


def xnnpack_quantizer(
    *,
    per_channel: bool = True,
    qat: bool = False,
    only: list[str] | None = None,
    keep_float: list[str] | None = None,
) -> Any:
    """The XNNPACK int8 quantizer (global), optionally scoped by module name.

    ``only``: quantize just the ops inside these modules (one-layer sensitivity).
    ``keep_float``: quantize everything except ops inside these modules (mixed precision).

    Why not ``set_module_name``: XNNPACKQuantizer refuses ``None`` there (so it
    cannot keep a module in float), and a conv whose ReLU lives in the parent
    module matches no pattern under a module-name filter, so it silently stays
    float. Instead the global annotation runs as usual and the annotations of
    out-of-scope nodes are dropped; a dropped node simply runs in fp32 between
    dequantize and quantize nodes.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantizer import Quantizer

    inner = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=qat))
    if only is None and not keep_float:
        return inner
    only_set = set(only) if only is not None else None
    fp_set = set(keep_float or ())

    class _Scoped(Quantizer):
        def transform_for_annotation(self, model):
            return inner.transform_for_annotation(model)

        def annotate(self, model):
            inner.annotate(model)
            for node in model.graph.nodes:
                owner = _owner(node)
                drop = (only_set is not None and not _under(owner, only_set)) or _under(owner, fp_set)
                if drop:
                    node.meta.pop("quantization_annotation", None)
            return model

        def validate(self, model) -> None:
            inner.validate(model)

    return _Scoped()


def capture(
    model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], *, dynamic_batch: bool = False
) -> torch.fx.GraphModule:
    """``torch.export`` -> GraphModule. ``dynamic_batch`` lets training feed batches while exporting at batch 1."""
    import torch

    dyn = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dyn = tuple({0: batch} for _ in example_inputs)
        # a size-1 example would be specialised to the constant 1 (torch's 0/1 rule); trace at 2
        example_inputs = tuple(torch.cat([x, x]) for x in example_inputs)
    try:
        return torch.export.export(model, example_inputs, dynamic_shapes=dyn).module()
    except Exception as e:  # torch.export raises many types; the user needs the model named, not a trace
        raise ModelError(f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def ptq(
    captured: torch.fx.GraphModule,
    calibration: list[tuple[torch.Tensor, ...]],
    *,
    only: list[str] | None = None,
    keep_float: list[str] | None = None,
    per_channel: bool = True,
) -> torch.fx.GraphModule:
    """Post-training int8 of an already captured graph (deep-copied; the input is left untouched)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    gm = prepare_pt2e(
        copy.deepcopy(captured), xnnpack_quantizer(per_channel=per_channel, only=only, keep_float=keep_float)
    )
    with torch.no_grad():
        for b in calibration:
            gm(*b)
    return convert_pt2e(gm)


def qat_int8(
    model: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    teacher: torch.nn.Module | None = None,
    cfg: QATConfig | None = None,
    progress: bool = True,
) -> tuple[torch.fx.GraphModule, DistillReport]:
    """Quantization-aware training. ``teacher`` defaults to a frozen copy of ``model`` (fp32).

    Returns the converted (int8 q/dq) module, ready for the ExecuTorch exporter.
    """
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    cfg = cfg or QATConfig()
    teacher = teacher if teacher is not None else copy.deepcopy(model).eval()
    # capture in train mode: QAT folds BatchNorm into the conv's fake-quantized weight while
    # still updating BN statistics, which needs the training-mode batch_norm op in the graph
    was_training = model.training
    model.train()
    try:
        gm = capture(model, example_inputs, dynamic_batch=True)
    finally:
        model.train(was_training)
    prepared = prepare_qat_pt2e(gm, xnnpack_quantizer(per_channel=cfg.per_channel, qat=True))
    allow_exported_model_train_eval(prepared)  # .train()/.eval() now swap the BN/dropout ops
    rep = train_student(prepared, teacher, inputs, labels, cfg.train, progress=progress, description="qat")
    prepared.eval()
    with torch.no_grad():
        converted = convert_pt2e(prepared)
    return converted, rep
