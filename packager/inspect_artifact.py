"""What is inside an artifact file: size, hash, IO spec, ops, delegation. Backs ``mpk inspect``.

Reads the file as it is, without the manifest, so it answers "what did we
actually ship?" for any ``.pte``, ``.onnx`` or ``.mlpackage``, including one
mpk did not build. A file that is not what its suffix says is a UsageError
(exit 2) with a one-line reason, never a traceback.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from mpk.errors import UsageError
from mpk.files import sha256_file
from packager.runtime import backend_for_path

#: c10::ScalarType codes as the ExecuTorch MethodMeta reports them
_ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64"}
_ET_DTYPES[11] = "bool"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def inspect_artifact(path: Path) -> dict[str, Any]:
    """A JSON-able description of the artifact at ``path``; the backend comes from the suffix.

    >>> inspect_artifact(Path("out/effl0-int8.pte"))["delegation"]["fraction"]   # doctest: +SKIP
    1.0
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    backend = backend_for_path(path)
    info: dict[str, Any] = {"path": str(path), "backend": backend, "size_bytes": _size(path)}
    if path.is_file():
        info["sha256"] = sha256_file(path)
    reader = {"executorch": _inspect_pte, "onnx": _inspect_onnx, "coreml": _inspect_mlpackage}[backend]
    info.update(reader(path))
    return info


def _inspect_pte(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(8)
    # every .pte is a flatbuffer with file identifier "ET" + 2 version digits at bytes 4..8
    if len(head) < 8 or head[4:6] != b"ET":
        raise UsageError(f"{path}: not an ExecuTorch program (no 'ET' flatbuffer identifier)")
    out: dict[str, Any] = {}
    try:
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(path)
        methods = sorted(program.method_names)
        out["methods"] = methods
        if "forward" in methods:
            meta = program.metadata("forward")
            out["inputs"] = [_et_tensor(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
            out["outputs"] = [_et_tensor(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"{path}: ExecuTorch cannot load this program ({type(e).__name__}: {e})") from e
    out["delegation"] = _pte_delegation(path)
    return out


def _et_tensor(t: Any) -> dict[str, Any]:
    return {"shape": list(t.sizes()), "dtype": _ET_DTYPES.get(int(t.dtype()), str(t.dtype())), "nbytes": t.nbytes()}


def _pte_delegation(path: Path) -> dict[str, Any] | None:
    """Delegate vs kernel calls from the serialized program's instruction chains.

    Counts *calls* (one delegate blob may hold 200 ops), so it is coarser than the exporter's op-level
    count in the manifest; it is what can be read back from the file alone. None if this executorch
    build cannot deserialize (private API).
    """
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = deserialize_pte_binary(path.read_bytes())
        program = getattr(pte, "program", pte)
        plan = next(p for p in program.execution_plan if p.name == "forward")
    except Exception:
        return None
    calls: collections.Counter[str] = collections.Counter()
    kernels: collections.Counter[str] = collections.Counter()
    for chain in plan.chains:
        for ins in chain.instructions:
            kind = type(ins.instr_args).__name__
            calls[kind] += 1
            if kind == "KernelCall":
                op = plan.operators[ins.instr_args.op_index]
                kernels[op.name.replace("::", ".")] += 1
    return {
        "delegates": sorted({d.id for d in plan.delegates}),
        "delegate_calls": calls.get("DelegateCall", 0),
        "kernel_calls": calls.get("KernelCall", 0),
        "undelegated": dict(sorted(kernels.items())),
    }


def _inspect_onnx(path: Path) -> dict[str, Any]:
    import onnx
    from onnx import helper

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise UsageError(f"{path}: not a readable ONNX model ({type(e).__name__})") from e
    if not proto.graph.node:
        raise UsageError(f"{path}: not a readable ONNX model (empty graph)")
    g = proto.graph
    inits = {i.name for i in g.initializer}

    def io(v: Any) -> dict[str, Any]:
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": str(helper.tensor_dtype_to_np_dtype(tt.elem_type))}

    ops = collections.Counter(n.op_type for n in g.node)
    used = {n.domain for n in g.node} | {""}
    init_bytes = 0
    for t in g.initializer:
        if t.raw_data:
            init_bytes += len(t.raw_data)
        else:
            n = 1
            for d in t.dims:
                n *= d
            init_bytes += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer)
    return {
        # only domains the graph uses: the quantizer declares a dozen it never touches
        "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import if o.domain in used},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [io(v) for v in g.input if v.name not in inits],
        "outputs": [io(v) for v in g.output],
        "op_summary": dict(sorted(ops.items())),
        "nodes": len(g.node),
        "initializer_bytes": init_bytes,
        "external_data": external,
        "qdq_nodes": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
    }


def _inspect_mlpackage(path: Path) -> dict[str, Any]:
    if not (path / "Manifest.json").is_file():
        raise UsageError(f"{path}: not a Core ML package (no Manifest.json)")
    from packager.export.coreml import load_spec, mil_op_histogram, spec_io

    spec = load_spec(path)
    return {
        "specification_version": spec.specificationVersion,
        "model_type": spec.WhichOneof("Type"),
        "inputs": spec_io(spec.description.input),
        "outputs": spec_io(spec.description.output),
        "op_summary": mil_op_histogram(spec),
    }
