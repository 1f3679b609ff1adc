"""ExecuTorch exporter: torch.export -> (PT2E int8) -> edge -> XNNPACK delegate -> ``.pte``.

Static int8 is PT2E with XNNPACK's quantizer (with ReLU6 observed behind the clamp, see
``_clamp_aware_quantizer``), calibrated on the Dataset; then the conv biases are bias-corrected on the same
samples (:mod:`packager.export.pt2e_bias_correction`), as for ONNX. ``bias_correction=False`` skips that.

An operator XNNPACK cannot take is not an error: it stays in the graph and runs
on ExecuTorch's portable kernels, which is slow on a phone. We record it in
``delegation["undelegated"]`` so the manifest (and a reviewer) sees it. A failure
to capture or lower the model is an error, and names the operator when the
exception lets us.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import DataError, ExportError, UsageError
from packager.export import source_map
from packager.export.base import Exporter, HostSession, capture, describe_failure, dynamic_shapes
from packager.export.capabilities import check_combination
from packager.types import Dataset, ExportedArtifact, LoadedModel

#: graph nodes that move data around but compute nothing; left out of the op counts
_BOOKKEEPING = {"getitem"}


def _is_delegate_call(node: Any) -> bool:
    return node.op == "call_function" and "executorch_call_delegate" in str(node.target)


def delegation_summary(edge_program: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """Count ops inside delegate blobs vs ops left on portable kernels, from a lowered edge program.

    Returns (delegation, op_summary). ``fraction = delegated_ops / total_ops``; e.g. 40 convs
    delegated and one ``aten.nonzero`` left outside gives 40/41 = 0.976.
    """
    gm = edge_program.graph_module
    delegated: collections.Counter[str] = collections.Counter()
    undelegated: collections.Counter[str] = collections.Counter()
    backends: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _is_delegate_call(node):
            lowered = getattr(gm, node.args[0].target)
            backends.add(lowered.backend_id)
            for inner in lowered.original_module.graph_module.graph.nodes:
                if inner.op == "call_function":
                    name = source_map.op_name(inner.target)
                    if name not in _BOOKKEEPING:
                        delegated[name] += 1
            continue
        name = source_map.op_name(node.target)
        if name not in _BOOKKEEPING:
            undelegated[name] += 1
    n_del, n_und = sum(delegated.values()), sum(undelegated.values())
    total = n_del + n_und
    delegation = {
        "delegate": ",".join(sorted(backends)) or None,
        "delegated_ops": n_del,
        "total_ops": total,
        "fraction": round(n_del / total, 4) if total else 0.0,
        "undelegated": dict(sorted(undelegated.items())),
    }
    return delegation, dict(sorted((delegated + undelegated).items()))


_CLAMPS = ("hardtanh.default", "hardtanh_.default")
_PRODUCERS = ("conv2d.default", "conv1d.default", "linear.default")


def _clamp_aware_quantizer(config: Any) -> Any:
    """XNNPACKQuantizer that gives conv/linear -> ReLU6 the treatment it already gives conv/linear -> ReLU.

    The stock quantizer annotates ``hardtanh`` (ReLU6) as sharing its input's quantization parameters, so a
    conv's output is observed *before* the clamp: its int8 grid spans the whole pre-clamp range (often
    -100..100) and only a handful of steps land inside [0, 6]. On EfficientNet-Lite0 (ReLU6 after every
    conv) that costs top-1 agreement with fp32 of ~0.78. Moving the output observer behind the clamp, as
    for conv+relu, quantizes the values that survive: agreement ~0.96. XNNPACK fuses the clamp into the
    conv (its output_min/max), so the lowered graph is the same shape and stays fully delegated.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    key = "quantization_annotation"

    def name_of(node: Any) -> str:
        return str(getattr(node.target, "_opname", "")) + "." + str(getattr(node.target, "_overloadname", ""))

    class ClampAwareXNNPACKQuantizer(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.op != "call_function" or name_of(node) not in _CLAMPS:
                    continue
                src = node.args[0]
                if (
                    isinstance(src, torch.fx.Node)
                    and src.op == "call_function"
                    and name_of(src) in _PRODUCERS
                    and key in src.meta
                    and len(src.users) == 1
                ):
                    src.meta[key].output_qspec = None
                    node.meta[key] = QuantizationAnnotation(
                        input_qspec_map={}, output_qspec=config.output_activation, _annotated=True
                    )
            return model

    return ClampAwareXNNPACKQuantizer()


def _quantize_pt2e(
    model: LoadedModel, ep: Any, scheme: str, calibration: Dataset | None, bias_correction: bool
) -> tuple[Any, dict[str, Any] | None]:
    """PT2E: prepare with XNNPACKQuantizer, calibrate (static only), convert, bias-correct, re-export.

    Returns the quantized ExportedProgram and, for static int8, the bias-correction report.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from packager.export import pt2e_bias_correction as bc

    dynamic = scheme == "int8-dynamic"
    if not dynamic and (calibration is None or len(calibration) == 0):
        raise DataError("executorch int8 needs calibration samples (static activation ranges); none were given")
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = (XNNPACKQuantizer() if dynamic else _clamp_aware_quantizer(config)).set_global(config)
    report: dict[str, Any] | None = None
    try:
        prepared = prepare_pt2e(ep.module(), quantizer)
        with torch.no_grad():
            # dynamic schemes need one pass to materialise observers; static ones need the calibration set
            raw = calibration.samples if calibration is not None and len(calibration) else [model.example_inputs]
            samples = [tuple(torch.as_tensor(np.asarray(a)) for a in sample) for sample in raw]
            correct = bias_correction and not dynamic
            fp32 = bc.calibrate(prepared, samples, record=bc.MAX_SAMPLES if correct else 0)
            converted = convert_pt2e(prepared)
            if correct:
                report = bc.correct_biases(converted, samples, fp32)
            elif not dynamic:
                report = {"applied": False, "reason": "turned off (bias_correction: false)"}
            quantized = torch.export.export(
                converted, tuple(model.example_inputs), dynamic_shapes=dynamic_shapes(model), strict=False
            )
            return quantized, report
    except (DataError, UsageError):
        raise
    except Exception as e:
        raise ExportError("executorch", f"{scheme} quantization failed: {describe_failure(e)}") from e


class ExecuTorchExporter(Exporter):
    name = "executorch"
    suffix = ".pte"

    def __init__(self, *, bias_correction: bool = True) -> None:
        #: static int8 only: correct conv biases for the mean shift int8 weights cause (recipe ``bias_correction``)
        self.bias_correction = bias_correction

    def export(self, model: LoadedModel, scheme: str, calibration: Dataset | None, out_dir: Path) -> ExportedArtifact:
        check_combination(self.name, scheme)
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        ep = capture(model, self.name)
        correction = None
        if scheme in ("int8", "int8-dynamic"):
            ep, correction = _quantize_pt2e(model, ep, scheme, calibration, self.bias_correction)
        try:
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=True)
        except Exception as e:
            raise ExportError(self.name, f"lowering to edge/XNNPACK failed: {describe_failure(e)}") from e
        delegation, ops = delegation_summary(edge.exported_program())
        try:
            program = edge.to_executorch()
        except Exception as e:
            raise ExportError(self.name, f"to_executorch failed: {describe_failure(e)}") from e
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{model.name}-{scheme}{self.suffix}"
        path.write_bytes(program.buffer)
        details: dict[str, Any] = {"partitioner": "XnnpackPartitioner"}
        profiling = source_map.profiling_files(source_map.write_executorch_files, model, edge, program, path,
                                               details=details)  # fmt: skip
        if scheme != "fp32":
            details["quantizer"] = {
                "name": "XNNPACKQuantizer",
                "per_channel": True,
                "dynamic": scheme == "int8-dynamic",
                "calibration_samples": len(calibration) if calibration is not None and scheme == "int8" else 0,
            }
            if correction is not None:
                details["quantizer"]["bias_correction"] = correction
        return ExportedArtifact(
            backend=self.name,
            scheme=scheme,
            path=path,
            inputs=list(model.inputs),
            outputs=list(model.outputs),
            delegation=delegation,
            op_summary=ops,
            details=details,
            profiling_files=profiling,
        )

    def open(self, path: Path, *, threads: int | None = None) -> HostSession:
        return ExecuTorchSession(path, threads=threads)


class ExecuTorchSession:
    """A ``.pte`` loaded into the ExecuTorch Python runtime (portable kernels + XNNPACK)."""

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        from executorch.runtime import Runtime

        if threads:
            # XNNPACK's threadpool is process-wide; the pybinding exposes only this reset. Best effort.
            try:
                from executorch.extension.pybindings import portable_lib

                portable_lib._unsafe_reset_threadpool(int(threads))
            except Exception:  # older builds lack the hook; the thread count is advisory, not a contract
                pass
        try:
            program = Runtime.get().load_program(Path(path))
            self._method = program.load_method("forward")
        except Exception as e:
            raise UsageError(f"{path}: not a loadable ExecuTorch program ({type(e).__name__}: {e})") from e
        self._program = program  # the method borrows from it

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        import torch

        outs = self._method.execute([torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
        return [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]
