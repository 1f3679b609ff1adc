"""ExecuTorch exporter: torch.export -> (PT2E int8) -> edge -> XNNPACK delegate -> ``.pte``.

Static int8 is PT2E with mpk's XNNPACK quantizer (:mod:`packager.export.pt2e_quantizer`: integer arithmetic kept
integer, only linear/conv quantized in transformer-like graphs, ReLU6 observed behind the clamp), calibrated on the
Dataset; then the conv biases are bias-corrected on the same samples (:mod:`packager.export.pt2e_bias_correction`),
as for ONNX. ``bias_correction=False`` skips that. The int8 model is checked against fp32 on the calibration
samples and its per-layer error table goes to the manifest; with ``float_fallback="auto"`` the worst layers stay
float until the tolerance is met (:mod:`packager.export.layer_errors`).

Lowering (edge -> XNNPACK -> ``.pte``) is single-threaded Python, half of a cold EfficientNet-Lite0 package; when the
pipeline has another artifact to build, :meth:`ExecuTorchExporter.start_export` runs it in a forked child meanwhile.

An operator XNNPACK cannot take is not an error: it stays in the graph and runs
on ExecuTorch's portable kernels, which is slow on a phone. We record it in
``delegation["undelegated"]`` so the manifest (and a reviewer) sees it. A failure
to capture or lower the model is an error, and names the operator when the
exception lets us.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import DataError, ExportError, UsageError
from packager.export import source_map
from packager.export.base import (
    Exporter,
    HostSession,
    Started,
    capture,
    describe_failure,
    dynamic_shapes,
    locate_node,
)
from packager.export.capabilities import check_combination
from packager.host import ChildFailed, Forked, can_fork
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
    from packager.export.layer_errors import module_path, source_line

    gm = edge_program.graph_module
    delegated: collections.Counter[str] = collections.Counter()
    undelegated: collections.Counter[str] = collections.Counter()
    where: dict[str, list[str]] = {}
    partitions = 0
    backends: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _is_delegate_call(node):
            partitions += 1
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
            path = module_path(node.meta.get("nn_module_stack"))
            src = source_line(node.meta.get("stack_trace"))
            label = " ".join(x for x in (path, f"({src})" if src else None) if x)
            if label and label not in where.setdefault(name, []) and len(where[name]) < 3:
                where[name].append(label)
    n_del, n_und = sum(delegated.values()), sum(undelegated.values())
    total = n_del + n_und
    delegation = {
        "delegate": ",".join(sorted(backends)) or None,
        "delegated_ops": n_del,
        "total_ops": total,
        "fraction": round(n_del / total, 4) if total else 0.0,
        "undelegated": dict(sorted(undelegated.items())),
        "partitions": partitions,
    }
    if undelegated:
        # which layers the portable-kernel ops come from (up to 3 per op), and a line a reviewer reads
        delegation["undelegated_where"] = {k: where.get(k, []) for k in sorted(undelegated)}
        top = ", ".join(f"{k} x{v}" for k, v in undelegated.most_common(4))
        delegation["explanation"] = (
            f"{n_und} of {total} ops ({100 * n_und / max(total, 1):.0f}%) run on ExecuTorch's portable kernels, "
            f"not XNNPACK (no XNNPACK kernel for them, or they sit between delegated parts): {top}. Portable kernels "
            f"are single-threaded reference code, and each of the {partitions} delegate calls is a boundary the "
            "tensors cross; a phone profile (mpk bench) shows the time they take"
        )
    return delegation, dict(sorted((delegated + undelegated).items()))


@dataclass
class _Quantized:
    """One PT2E quantization: the converted module, the bias-correction report, the nodes it quantized."""

    converted: Any
    correction: dict[str, Any] | None
    annotated: frozenset[str]
    #: fp32's and the converted model's outputs on the first calibration samples, when calibration and bias
    #: correction measured them (the calibration check reuses them rather than running the samples again)
    fp32: list[list[np.ndarray]] | None = None
    outputs: list[list[np.ndarray]] | None = None


def _quantize_pt2e(
    model: LoadedModel,
    ep: Any,
    scheme: str,
    calibration: Dataset | None,
    *,
    bias_correction: bool,
    float_fallback: bool,
    tolerances: dict[str, float],
) -> tuple[Any, dict[str, Any], Callable[[], None]]:
    """PT2E with mpk's XNNPACK quantizer (:mod:`packager.export.pt2e_quantizer`): prepare, calibrate (static
    only), convert, bias-correct; with ``float_fallback`` the worst layers stay float until the calibration
    outputs meet ``tolerances`` (:func:`packager.export.layer_errors.search`). Re-exported for lowering.

    Returns the quantized ExportedProgram, the quantizer's details for the manifest (policy, bias correction,
    per-layer errors, float fallback) and what fills in the per-layer table: it shapes nothing in the program,
    so it may run after the program went to lowering (in a forked child), until then ``layer_errors`` is None.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from mpk.metrics import stack
    from packager.export import layer_errors as le
    from packager.export import pt2e_bias_correction as bc
    from packager.export import pt2e_quantizer as pq
    from packager.verify import check, compute_metrics

    dynamic = scheme == "int8-dynamic"
    if not dynamic and (calibration is None or len(calibration) == 0):
        raise DataError("executorch int8 needs calibration samples (static activation ranges); none were given")
    raw = calibration.samples if calibration is not None and len(calibration) else [model.example_inputs]
    samples = [tuple(torch.as_tensor(np.asarray(a)) for a in sample) for sample in raw]
    correct = bias_correction and not dynamic
    checked = samples[: le.CHECK_SAMPLES]
    tol = {k: v for k, v in tolerances.items() if k != "max_accuracy_drop"}
    try:
        with torch.no_grad():
            policy = pq.policy_for(ep.module())
            fp32: list[list[np.ndarray]] = []  # fp32 outputs on the checked samples, from the first attempt

            def quantize(floats: frozenset[str]) -> _Quantized:
                quantizer = pq.make_quantizer(dynamic=dynamic, policy=policy, floats=floats)
                prepared = prepare_pt2e(ep.module(), quantizer)
                try:
                    record = bc.calibrate(prepared, samples, record=bc.MAX_SAMPLES if correct else 0)
                except Exception as e:  # name the node that failed, not the wrapper's forward that called it
                    e.mpk_where = locate_node(prepared, samples[0])  # type: ignore[attr-defined]
                    raise
                converted = convert_pt2e(prepared)
                report, outputs = None, []
                if correct:
                    report = bc.correct_biases(converted, samples, record, outputs=outputs)
                elif not dynamic:
                    report = {"applied": False, "reason": "turned off (bias_correction: false)"}
                return _Quantized(converted, report, quantizer.annotated, record.outputs or None, outputs or None)

            def evaluate(q: _Quantized) -> tuple[list[str], dict[str, Any]]:
                n = len(checked)
                if not fp32:  # calibration recorded them (observers do not change values), else run them
                    fp32.extend(le.reuse(q.fp32, n) or [bc._leaves(ep.module()(*s)) for s in checked])
                got = le.reuse(q.outputs, n) or [bc._leaves(q.converted(*s)) for s in checked]
                metrics = compute_metrics(stack(fp32), stack(got), task=model.task)
                missed = check(metrics, tol)
                marginal = le.within_sampling_error(fp32, got, task=model.task, minimum=tol.get("min_top1_agreement"))
                return missed or ([marginal] if marginal else []), metrics

            twin: list[Any] = []  # the fp32 graph and its activations, measured once for every attempt

            def layers(q: _Quantized) -> list[le.LayerError]:
                few = samples[: le.LAYER_SAMPLES]
                if not twin:
                    gm = pq.fp32_twin(ep.module())
                    twin.extend([gm, pq.activations(gm, few)])
                return pq.layer_errors(twin[0], q.converted, few, set(q.annotated), ref=twin[1])

            best, fallback = le.search(quantize, evaluate, layers, enabled=float_fallback and not dynamic)
            quantized = torch.export.export(
                best.quantized.converted,
                tuple(model.example_inputs),
                dynamic_shapes=dynamic_shapes(model),
                strict=False,
            )
    except (DataError, UsageError):
        raise
    except Exception as e:
        raise ExportError("executorch", f"{scheme} quantization failed: {describe_failure(e)}") from e
    details: dict[str, Any] = {
        "policy": policy,
        "policy_reason": pq.POLICY_REASONS[policy],
        "calibration_check": {
            "samples": len(checked),
            **le._rounded(best.metrics),
            "missed": best.missed,
            "tolerances": tol,
        },
        "layer_errors": None,  # tables()
    }
    if best.quantized.correction is not None:
        details["bias_correction"] = best.quantized.correction
    if fallback is not None:
        kept = sorted(best.floats)
        details["float_fallback"] = {
            **fallback,
            "layers": [{"name": n} for n in kept],  # tables() adds where each is
            # int8 weights are 1 byte, float ones 4: each weight element kept in float costs 3 bytes
            "size_cost_bytes": 3 * pq.weight_elements(ep.module(), set(kept)),
            "size_cost_estimated": True,
        }

    def tables() -> None:
        try:
            with torch.no_grad():
                rows = best.rows or layers(best.quantized)
        except Exception as e:
            raise ExportError("executorch", f"{scheme} per-layer errors failed: {describe_failure(e)}") from e
        details["layer_errors"] = le.table(
            rows, samples=min(len(samples), le.LAYER_SAMPLES), where="PT2E graph vs fp32"
        )
        by_name = {r.name: r for r in rows}
        for entry in details.get("float_fallback", {}).get("layers", []):
            row = by_name.get(entry["name"])
            if row is not None:
                entry.update(module=row.module, source=row.source, op=row.op)

    return quantized, details, tables


def slices_for_xnnpack(gm: Any) -> Any:
    """Rewrite ops ExecuTorch 1.4.1's XNNPACK partitioner lacks into equivalent ones it takes (a transform pass).

    * ``split_with_sizes_copy(x, sizes, dim)`` read through ``getitem(i)`` becomes one ``slice_copy`` per piece.
      A GRU/LSTM decomposed over its time steps splits its gate pre-activations in every step; each split cut the
      delegate, so a 128-step GRU fell into ~260 partitions (past :data:`MAX_PARTITIONS`, so nothing delegated at
      all; and at int8 its quantize/dequantize ops had no kernel outside the delegate). As slices it is one or
      a few partitions.
    * ``squeeze_copy`` of a static shape becomes ``view_copy`` (the same bytes; XNNPACK takes views, not squeezes).

    Static shapes only: XNNPACK takes no slice of a dynamic dim, and there the rewrite would gain nothing.
    """
    import operator

    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import PassResult

    edge = exir_ops.edge.aten
    graph, changed = gm.graph, False

    def static(node: Any) -> bool:
        val = node.meta.get("val")
        return val is not None and all(isinstance(d, int) for d in val.shape)

    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == edge.split_with_sizes_copy.default:
            src, sizes = node.args[0], list(node.args[1])
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
            if not static(src) or not all(u.target is operator.getitem for u in node.users):
                continue
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for user in list(node.users):
                i = user.args[1]
                with graph.inserting_before(user):
                    piece = graph.call_function(edge.slice_copy.Tensor, (src, dim, starts[i], starts[i] + sizes[i], 1))
                piece.meta = dict(user.meta)
                user.replace_all_uses_with(piece)
                graph.erase_node(user)
            graph.erase_node(node)
            changed = True
        elif node.target in (edge.squeeze_copy.dims, edge.squeeze_copy.dim, edge.squeeze_copy.default) and static(node):
            with graph.inserting_before(node):
                view = graph.call_function(edge.view_copy.default, (node.args[0], list(node.meta["val"].shape)))
            view.meta = dict(node.meta)
            node.replace_all_uses_with(view)
            graph.erase_node(node)
            changed = True
    if changed:
        graph.lint()
        gm.recompile()
    return PassResult(gm, changed)


#: more XNNPACK partitions than this and the model is left on portable kernels (see _bounded_partitioner)
MAX_PARTITIONS = 64


def _bounded_partitioner(base: type, limit: int) -> Any:
    """An XNNPACK partitioner that delegates nothing when the graph would split into more than ``limit`` partitions.

    Each partition is lowered on its own (a copy of the program, a re-trace, a compile), about a second each on
    a 2-core machine. A recurrent model decomposed over its time steps splits at every op XNNPACK lacks in each
    step (a 128-step GRU: ``aten.split_with_sizes_copy`` for its gates, ~5 per step, ~600 partitions) and lowering
    it ran for over 10 minutes. Proposing the partitions takes well under a second, so they are counted first;
    past ``limit`` it raises :class:`TooManyPartitions`, and the exporter lowers the program without delegation
    (portable kernels: correct, slow on a phone), recording why.
    """

    class BoundedPartitioner(base):  # type: ignore[misc, valid-type]
        def partition(self, exported_program: Any) -> Any:
            result = super().partition(exported_program)
            n = len(result.partition_tags)
            if n <= limit:
                return result
            splitters = collections.Counter(
                source_map.op_name(nd.target)
                for nd in result.tagged_exported_program.graph.nodes
                if nd.op == "call_function" and source_map.op_name(nd.target) not in _BOOKKEEPING
            )
            raise TooManyPartitions(
                f"the graph would split into {n} XNNPACK partitions (more than {limit}; each is lowered separately, "
                f"minutes in all): left on portable kernels. Most frequent ops: "
                + ", ".join(f"{k} x{v}" for k, v in splitters.most_common(4))
            )

    return BoundedPartitioner()


class TooManyPartitions(Exception):
    """Raised by the bounded partitioner; its message is the manifest's ``not_delegated_because``."""


class ExecuTorchExporter(Exporter):
    name = "executorch"
    suffix = ".pte"

    def __init__(self, *, bias_correction: bool = True) -> None:
        #: static int8 only: correct conv biases for the mean shift int8 weights cause (recipe ``bias_correction``)
        self.bias_correction = bias_correction

    def export(self, model: LoadedModel, scheme: str, calibration: Dataset | None, out_dir: Path) -> ExportedArtifact:
        return self.start_export(model, scheme, calibration, out_dir, overlap=lambda: False).finish()

    def start_export(
        self,
        model: LoadedModel,
        scheme: str,
        calibration: Dataset | None,
        out_dir: Path,
        *,
        overlap: Callable[[], bool],
    ) -> Started:
        """Capture and quantize here; lower (edge -> XNNPACK -> ``.pte``: a single-threaded Python half-minute
        for EfficientNet-Lite0) in a forked child when the host can (:func:`can_fork`) and ``overlap()``, so
        the next artifact builds meanwhile. The child lowers the same program object, so the bytes are
        the same as lowering here."""
        check_combination(self.name, scheme)
        ep = capture(model, self.name)
        quantizer: dict[str, Any] = {}
        tables: Callable[[], None] = lambda: None  # noqa: E731 - fp32 has no per-layer table
        if scheme in ("int8", "int8-dynamic"):
            from packager.verify import tolerances_for

            ep, quantizer, tables = _quantize_pt2e(
                model,
                ep,
                scheme,
                calibration,
                bias_correction=self.bias_correction,
                float_fallback=self.float_fallback == "auto",
                tolerances=tolerances_for(scheme, self.tolerance_overrides),
            )

        def artifact(lowered: _Lowered) -> ExportedArtifact:
            return self._artifact(model, scheme, calibration, quantizer, lowered)

        if can_fork() and overlap():
            child = Forked(lambda: _lower(ep, model, scheme, out_dir, threads=1), name=f"mpk-lower-{scheme}")
            try:
                # here, while the child lowers: the table does not change the program. On one thread: the
                # child holds the other core, and torch's OpenMP threads wait on each other at every op when
                # one of them has no core (the table took 16 s instead of 3.5 on 2 cores)
                with _torch_threads(1):
                    tables()
            except BaseException:
                child.cancel()
                raise

            def finish() -> ExportedArtifact:
                try:
                    return artifact(child.result())
                except ChildFailed as e:
                    raise ExportError(self.name, f"lowering to edge/XNNPACK failed: {e}") from None
                finally:
                    child.cancel()

            return Started(finish, running=True, done=child.done, cancel=child.cancel)
        tables()
        return Started.now(artifact(_lower(ep, model, scheme, out_dir)))

    def _artifact(
        self,
        model: LoadedModel,
        scheme: str,
        calibration: Dataset | None,
        quantizer: dict[str, Any],
        lowered: _Lowered,
    ) -> ExportedArtifact:
        details = lowered.details
        if scheme != "fp32":
            fallback = quantizer.pop("float_fallback", None)
            details["layer_errors"] = quantizer.pop("layer_errors")
            if fallback is not None:
                details["float_fallback"] = fallback
            details["quantizer"] = {
                "name": "XNNPACKQuantizer (mpk: integer arithmetic kept, per-graph policy)",
                "per_channel": True,
                "dynamic": scheme == "int8-dynamic",
                "calibration_samples": len(calibration) if calibration is not None and scheme == "int8" else 0,
                **quantizer,
            }
        return ExportedArtifact(
            backend=self.name,
            scheme=scheme,
            path=lowered.path,
            inputs=list(model.inputs),
            outputs=list(model.outputs),
            delegation=lowered.delegation,
            op_summary=lowered.op_summary,
            details=details,
            profiling_files=lowered.profiling_files,
        )

    def open(self, path: Path, *, threads: int | None = None) -> HostSession:
        return ExecuTorchSession(path, threads=threads)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class _Lowered:
    """What lowering wrote and found: the ``.pte``, its delegation and op counts, its profiling files."""

    path: Path
    delegation: dict[str, Any]
    op_summary: dict[str, int]
    details: dict[str, Any]
    profiling_files: dict[str, Path]


def _lower(ep: Any, model: LoadedModel, scheme: str, out_dir: Path, *, threads: int | None = None) -> _Lowered:
    """Edge -> XNNPACK -> ``.pte`` under ``out_dir``, with the source map. ``threads``: torch's intra-op
    threads for the call (1 in a forked child: the parent goes on with its own work)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if threads:
        import torch

        torch.set_num_threads(threads)
    partitioner = _bounded_partitioner(XnnpackPartitioner, MAX_PARTITIONS)
    refused = None
    try:
        try:
            edge = to_edge_transform_and_lower(
                ep, transform_passes=[slices_for_xnnpack], partitioner=[partitioner], generate_etrecord=True
            )
        except TooManyPartitions as e:
            # XNNPACK kept ops like aten.linear whole for itself; without it they must be decomposed again
            refused = str(e)
            edge = to_edge_transform_and_lower(ep, transform_passes=[slices_for_xnnpack], generate_etrecord=True)
    except Exception as e:
        raise ExportError("executorch", f"lowering to edge/XNNPACK failed: {describe_failure(e)}") from e
    delegation, ops = delegation_summary(edge.exported_program())
    if refused is not None:
        delegation["not_delegated_because"] = refused
    stranded = sorted(k for k in delegation["undelegated"] if k.startswith("quantized_decomposed."))
    if stranded:
        # ExecuTorch's portable kernels (the pip runtime, and what runs outside a delegate) have no int8
        # quantize/dequantize: the program would not even serialise ("Missing out variants")
        where = refused or "XNNPACK declined the ops around them: " + ", ".join(
            f"{k} x{v}"
            for k, v in sorted(delegation["undelegated"].items(), key=lambda kv: -kv[1])
            if k not in stranded
        )
        n = sum(delegation["undelegated"][k] for k in stranded)
        raise ExportError(
            "executorch",
            f"{scheme} needs XNNPACK to run its quantized ops, and {n} quantize/dequantize ops were left outside "
            f"it ({where}); portable kernels have no int8 kernels",
            hint="package this model with --quantize none for ExecuTorch, or int8 on ONNX",
        )
    try:
        program = edge.to_executorch()
    except Exception as e:
        raise ExportError("executorch", f"to_executorch failed: {describe_failure(e)}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{model.name}-{scheme}{ExecuTorchExporter.suffix}"
    path.write_bytes(program.buffer)
    details: dict[str, Any] = {"partitioner": "XnnpackPartitioner"}
    profiling = source_map.profiling_files(source_map.write_executorch_files, model, edge, program, path,
                                           details=details)  # fmt: skip
    return _Lowered(path, delegation, ops, details, profiling)


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
