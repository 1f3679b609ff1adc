"""The op map: which PyTorch module each op of an exported artifact came from, recorded at export time.

A profile taken anywhere (this host, the virtual device, a phone) names the runtime's ops; the op map written
here, beside the artifact in the package (``<artifact>.opmap.json``, ``mpk.opmap/1``, listed in the manifest
with its sha256), lets mpk put each op back on the module that produced it, later and off the device.

* **ONNX**: torch.onnx's dynamo exporter writes each node's module scope into ``metadata_props``
  (``pkg.torch.onnx.name_scopes`` = ``['', '_blocks.0', '_blocks.0._bn1', '<fx node>']``); ONNX Runtime's
  quantizer keeps original nodes and their metadata and adds QuantizeLinear/DequantizeLinear nodes without
  any. A node is placed on (first that applies): the module owning its weight (``_blocks.0._depthwise_conv``
  for the conv the exporter fused a BatchNorm into, whose scope names the BatchNorm), its deepest scope, or
  for an inserted Q/DQ node the node it wraps (a QuantizeLinear its input's producer, an activation
  DequantizeLinear its QuantizeLinear's, a weight DequantizeLinear the op consuming the weight).
* **ExecuTorch**: every edge op carries ``nn_module_stack`` and a ``debug_handle``; ops inside an XNNPACK
  delegate are listed in the delegate's order with the delegate's name. The ETRecord
  (``executorch.devtools.generate_etrecord``'s file, ``<artifact>.etrecord``) is written beside it: what
  ExecuTorch's own Inspector needs to read an ETDump from a runtime built with the event tracer, and the
  exported program mpk's per-module estimate lowers from (:mod:`packager.export.et_estimate`).

Both maps name the model's modules (``dict(model.named_modules())`` paths and classes) and its rollup units
(:func:`units_of_model`), so the same module is the same row in every backend's table.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mpk.contract.profile import OPMAP_VERSION, write_opmap
from mpk.profiling import assign_units, unit_of

#: the op map's file name beside an artifact ``model-int8.onnx`` -> ``model-int8.opmap.json``
OPMAP_SUFFIX = ".opmap.json"
ETRECORD_SUFFIX = ".etrecord"
_CONTAINERS = ("ModuleList", "ModuleDict", "Sequential")
_PARAM = re.compile(r"^(?P<module>.+)\.(?:weight|bias)(?:_quantized|_DequantizeLinear_Output|_scale|_zero_point)?$")


def units_of_model(module: Any) -> tuple[dict[str, str], list[str]]:
    """(every module path -> its class name, the rollup units): the top-level children, with ModuleList,
    ModuleDict and Sequential replaced by their children, recursively.

    EfficientNet-Lite0: ``_conv_stem, _bn0, _blocks.0 ... _blocks.15, _conv_head, _bn1, _avg_pooling, ...``.
    """
    named = dict(module.named_modules())
    modules = {path: type(m).__name__ for path, m in named.items()}
    units: list[str] = []

    def visit(prefix: str, m: Any) -> None:
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if type(child).__name__ in _CONTAINERS and any(True for _ in child.children()):
                visit(path, child)
            else:
                units.append(path)

    visit("", module)
    return modules, units


def _normal_path(raw: str, modules: dict[str, str]) -> str | None:
    """A module path as ``named_modules()`` spells it, from nn_module_stack's or a scope's spelling."""
    if raw in modules:
        return raw
    p = re.sub(r"^L\['self'\]\.?", "", raw)
    p = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", p).strip(".")
    p = re.sub(r"\.getattr\(|\)", "", p)
    return p if p in modules else None


def _stack_module(meta: dict[str, Any], modules: dict[str, str]) -> str | None:
    """The innermost module of an fx node's ``nn_module_stack`` (``""`` for the root's own ops)."""
    stack = meta.get("nn_module_stack") or {}
    for value in reversed(list(stack.values())):
        path = value[0] if isinstance(value, tuple | list) else value
        found = _normal_path(str(path), modules)
        if found is not None:
            return found
    return "" if stack else None


# ---------------------------------------------------------------- ONNX


def _scopes(node: Any) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                v = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return []
            return [str(s) for s in v] if isinstance(v, list) else []
    return []


def onnx_opmap(proto: Any, modules: dict[str, str], units: list[str], model_name: str) -> dict[str, Any]:
    """The op map of an ONNX graph (fp32 straight from torch.onnx, or quantized by ONNX Runtime)."""
    graph = proto.graph
    initializers = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    module: dict[str, str | None] = {}
    via: dict[str, str] = {}

    def weight_owner(n: Any) -> str | None:
        for t in n.input[1:]:
            src = producer.get(t)
            name = src.input[0] if src is not None and src.op_type == "DequantizeLinear" else t
            if name in initializers or (src is not None and src.op_type == "DequantizeLinear"):
                m = _PARAM.match(name)
                if m and m.group("module") in modules:
                    return m.group("module")
        return None

    qdq = ("QuantizeLinear", "DequantizeLinear")
    for n in graph.node:
        if n.op_type in qdq:
            continue
        owner = weight_owner(n)
        if owner is not None:
            module[n.name], via[n.name] = owner, "weight"
            continue
        scopes = [s for s in _scopes(n)[:-1] if _normal_path(s, modules) is not None]
        if scopes:
            module[n.name], via[n.name] = _normal_path(scopes[-1], modules), "scope"
        elif _scopes(n):
            module[n.name], via[n.name] = "", "scope"  # an op of the root module's own forward
        else:
            module[n.name], via[n.name] = None, "none"

    def is_weight_dq(n: Any) -> bool:
        return n.op_type == "DequantizeLinear" and n.input[0] in initializers

    # inserted Q/DQ nodes go with the node they wrap: a DequantizeLinear with the op reading it, a QuantizeLinear
    # with the op whose output it quantizes (a graph input's: the op reading it, through its DequantizeLinear)
    def reader(n: Any, hops: int = 0) -> str | None:
        for c in consumers.get(n.output[0], []) if n.output else []:
            if c.op_type in qdq:
                found = reader(c, hops + 1) if hops < 2 else None
            else:
                found = module.get(c.name)
            if found is not None:
                return found
        return None

    for n in graph.node:
        if n.op_type not in qdq:
            continue
        src = producer.get(n.input[0])
        if n.op_type == "QuantizeLinear" and src is not None and src.op_type not in qdq:
            found = module.get(src.name)
        else:
            found = reader(n)
        if found is None and src is not None:  # a graph output's DequantizeLinear: what it gives back
            found = module.get(src.name)
        module[n.name], via[n.name] = found, "qdq" if found is not None else "none"

    flow = [n for n in graph.node if not is_weight_dq(n)]
    flow_units = dict(zip((n.name for n in flow), assign_units([(module.get(n.name), n.op_type) for n in flow],
                                                              units), strict=True))  # fmt: skip
    nodes = []
    for n in graph.node:
        if is_weight_dq(n):
            users = consumers.get(n.output[0], [])
            u = flow_units.get(users[0].name) if users else unit_of(module.get(n.name), units)
        else:
            u = flow_units.get(n.name)
        nodes.append({"name": n.name, "op_type": n.op_type, "module": module.get(n.name), "unit": u,
                      "via": via.get(n.name, "none"), "inputs": [t for t in n.input if t and t not in initializers],
                      "outputs": list(n.output)})  # fmt: skip
    return {"schema_version": OPMAP_VERSION, "backend": "onnx", "model": model_name, "modules": modules,
            "units": units, "nodes": nodes}  # fmt: skip


def write_onnx_opmap(model: Any, artifact: Path) -> dict[str, Path]:
    """Write ``artifact``'s op map beside it; returns ``{"op_map": path}`` for the ExportedArtifact."""
    import onnx

    modules, units = units_of_model(model.module)
    proto = onnx.load(str(artifact), load_external_data=False)
    path = artifact.with_name(artifact.name[: -len(".onnx")] + OPMAP_SUFFIX)
    write_opmap(path, onnx_opmap(proto, modules, units, model.name))
    return {"op_map": path}


# ---------------------------------------------------------------- ExecuTorch


def op_name(target: Any) -> str:
    """``aten.convolution.default``-style name of an fx target, spelled as the manifest's op_summary spells it
    (the one spelling: packager/export/executorch.py counts op_summary with it too)."""
    if target is operator.getitem:
        return "getitem"
    op = getattr(target, "_op", target)  # edge ops wrap an OpOverload in ``_op``
    name = getattr(op, "name", None)
    if callable(name):
        try:
            return str(name()).replace("::", ".")
        except Exception:  # an odd target without a schema; the generic spelling below will do
            pass
    return getattr(target, "__name__", None) or str(target)


def _qdq_module(node: Any, module_of: Any) -> str | None:
    """The module a quantize/dequantize op belongs to: the op it wraps (PT2E inserts them at the root).

    A dequantize wraps the input of the op that reads it (a weight's, or an activation's); a quantize wraps
    the output of the op that produced its input (a graph input's quantize: the op that reads it). So a
    unit cut between two ops takes int8 in and gives int8 out, as XNNPACK runs it.
    """

    def first_user(n: Any, hops: int = 0) -> str | None:
        for user in n.users:
            if user.op != "call_function":
                continue
            if "quantize" in str(user.target) and hops < 2:  # q -> dq -> op: the op
                found = first_user(user, hops + 1)
                if found is not None:
                    return found
                continue
            return module_of(user)
        return None

    src = node.args[0] if node.args else None
    if "dequantize" in str(node.target):
        found = first_user(node)
        if found is None and getattr(src, "op", None) == "call_function":  # a graph output's: what it gives back
            return module_of(src)
        return found
    if getattr(src, "op", None) == "call_function":
        return module_of(src)
    return first_user(node)


def _graph_ops(graph: Any, modules: dict[str, str]) -> list[tuple[Any, str, str | None]]:
    """(fx node, op name, module) of every op of one graph, quantize/dequantize placed on the op they wrap."""
    cache: dict[Any, str | None] = {}

    def module_of(n: Any, depth: int = 0) -> str | None:
        if n in cache:
            return cache[n]
        m = _stack_module(n.meta, modules)
        if "quantize" in str(n.target) and (m in ("", None)) and depth < 8:
            m = _qdq_module(n, lambda x: module_of(x, depth + 1)) or m
        cache[n] = m
        return m

    ops = [n for n in graph.nodes if n.op == "call_function" and op_name(n.target) != "getitem"]
    # an op of constants only (a weight's dequantize, hoisted to the top by PT2E) is listed right before the op
    # that reads it, so it falls in that op's unit
    # (in a delegate's graph weights are placeholders: a dequantize of placeholders only is a weight's)
    late = {n for n in ops if n.users and n.all_input_nodes
            and not any(a.op == "call_function" for a in n.all_input_nodes)
            and (all(a.op == "get_attr" for a in n.all_input_nodes) or "dequantize" in str(n.target))}  # fmt: skip
    order: list[Any] = []
    for n in ops:
        if n in late:
            continue
        order.extend(a for a in n.all_input_nodes if a in late and a not in order)
        order.append(n)
    order.extend(n for n in ops if n not in order)
    return [(n, op_name(n.target), module_of(n)) for n in order]


def _edge_nodes(edge_program: Any, modules: dict[str, str]) -> Iterable[dict[str, Any]]:
    """Every op of the lowered edge program in execution order; ops inside a delegate expanded in place."""
    gm = edge_program.graph_module
    delegate_index = 0
    for node, name, module in _graph_ops(gm.graph, modules):
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(gm, node.args[0].target)
            for inner, inner_name, inner_module in _graph_ops(lowered.original_module.graph_module.graph, modules):
                yield {"name": inner.name, "op_type": inner_name, "module": inner_module,
                       "debug_handle": inner.meta.get("debug_handle"), "delegate": lowered.backend_id,
                       "delegate_index": delegate_index, "delegate_call": node.name}  # fmt: skip
            delegate_index += 1
            continue
        yield {"name": node.name, "op_type": name, "module": module, "debug_handle": node.meta.get("debug_handle"),
               "delegate": None}  # fmt: skip


def executorch_opmap(edge_program: Any, modules: dict[str, str], units: list[str], model_name: str,
                     etrecord: str | None) -> dict[str, Any]:  # fmt: skip
    """The op map of a lowered ExecuTorch program (``EdgeProgramManager.exported_program()``)."""
    nodes = list(_edge_nodes(edge_program, modules))
    for n, u in zip(nodes, assign_units([(n["module"], n["op_type"]) for n in nodes], units), strict=True):
        n["unit"] = u
        n["via"] = "nn_module_stack" if n["module"] is not None else "none"
    return {"schema_version": OPMAP_VERSION, "backend": "executorch", "model": model_name, "modules": modules,
            "units": units, "nodes": nodes, "etrecord": etrecord}  # fmt: skip


def write_executorch_files(model: Any, edge: Any, program: Any, artifact: Path) -> dict[str, Path]:
    """Write the ETRecord (when ``program`` carries one) and the op map beside ``artifact`` (a ``.pte``).

    ``edge`` is the EdgeProgramManager after lowering, ``program`` its ``to_executorch()`` result, both made
    with ``generate_etrecord=True``. Returns ``{"op_map": path, "etrecord": path}`` (the ETRecord only when
    written).
    """
    stem = artifact.name[: -len(".pte")]
    files: dict[str, Path] = {}
    etrecord = None
    get = getattr(program, "get_etrecord", None)
    record = get() if callable(get) else None
    if record is not None:
        path = artifact.with_name(stem + ETRECORD_SUFFIX)
        record.save(str(path))
        files["etrecord"] = path
        etrecord = path.name
    modules, units = units_of_model(model.module)
    doc = executorch_opmap(edge.exported_program(), modules, units, model.name, etrecord)
    files["op_map"] = artifact.with_name(stem + OPMAP_SUFFIX)
    write_opmap(files["op_map"], doc)
    return files


def profiling_files(write: Any, *args: Any, details: dict[str, Any]) -> dict[str, Path]:
    """``write(*args)``, or no files when it fails: an op map is a profiling aid, never a reason to lose the
    artifact. The failure is recorded in the artifact's ``details["profiling"]`` (the manifest shows it)."""
    try:
        return dict(write(*args))
    except Exception as e:  # any exporter graph we cannot read; the artifact itself is fine
        from packager.export.base import describe_failure

        details["profiling"] = {"op_map": None, "reason": describe_failure(e)}
        return {}
