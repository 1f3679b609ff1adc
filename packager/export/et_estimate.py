"""ExecuTorch per-unit time *estimate*, for runtimes that cannot time each op (no event tracer).

The PyPI ``executorch`` wheel's runtime is built without ``EXECUTORCH_ENABLE_EVENT_TRACER``: asking it for an
ETDump (``_load_for_executorch(..., enable_etdump=True)``) answers "No etdump data found, try rebuilding with
the CMake option EXECUTORCH_ENABLE_EVENT_TRACER", and XNNPACK runs a whole model as one delegate call, so
nothing inside it can be timed from outside. What this module measures instead, and labels as an estimate:

1. the exported program in the package's ETRecord (the exact graph the ``.pte`` was lowered from, quantized
   for int8) is cut into its rollup units (``_conv_stem``, ``_blocks.0`` ... the op map's ``unit``: a
   BatchNorm or activation goes with the op it follows, as XNNPACK fuses it);
2. each unit's subgraph becomes a program of its own, lowered with the same partitioner, fed the
   activations the whole model computes at its input, and timed alone on the same runtime and threads;
3. the rows are units, every one ``estimated: true``; their sum is compared with the whole model's
   unprofiled latency (``vs_p50``). The sum differs from the whole for real reasons: nothing is fused or
   kept in cache across units, each unit pays a delegate call, and an op XNNPACK would take only together
   with its neighbour may run on portable kernels alone (each row says how many of its ops were delegated).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpk.contract.profile import Profile, ProfileStatus
from mpk.profiling import assign_units

METHOD = ("estimate: each unit's subgraph of the ETRecord's exported program lowered to XNNPACK on its own and "
          "timed alone on this runtime (ignores fusion and cache effects across units)")  # fmt: skip


def _segments(gm: Any, modules: dict[str, str], units: list[str]) -> list[tuple[str, list[Any]]]:
    """(unit, fx nodes) for each run of consecutive ops of one unit, in graph order."""
    from packager.export.source_map import _graph_ops

    ops = _graph_ops(gm.graph, modules)
    labels = assign_units([(m, name) for _, name, m in ops], units)
    segs: list[tuple[str, list[Any]]] = []
    for (node, _, _), label in zip(ops, labels, strict=True):
        label = label or "(root)"
        if segs and segs[-1][0] == label:
            segs[-1][1].append(node)
        else:
            segs.append((label, [node]))
    # getitem nodes travel with the op whose tuple they index
    for _, nodes in segs:
        for n in list(nodes):
            for u in n.users:
                if u.op == "call_function" and "getitem" in str(u.target) and u not in nodes:
                    nodes.append(u)
    return segs


def _subgraph(gm: Any, nodes: list[Any]) -> tuple[Any, list[Any]]:
    """A GraphModule computing ``nodes`` alone, and the outside values it takes as inputs (in order)."""
    import torch

    inside = set(nodes)
    g = torch.fx.Graph()
    env: dict[Any, Any] = {}
    inputs: list[Any] = []
    for n in nodes:
        for a in n.all_input_nodes:
            if a in inside or a in env:
                continue
            if a.op == "get_attr":
                env[a] = g.get_attr(a.target)
            else:
                env[a] = g.placeholder(f"in_{len(inputs)}")
                inputs.append(a)
        env[n] = g.node_copy(n, lambda x: env[x])
    outs = [n for n in nodes if any(u not in inside for u in n.users)]
    g.output(tuple(env[o] for o in outs) if outs else ())
    return torch.fx.GraphModule(gm, g), inputs


def _values(gm: Any, args: Sequence[Any]) -> dict[Any, Any]:
    """Every fx node's value when the whole graph runs on ``args`` (the activations each unit will be fed)."""
    import torch

    seen: dict[Any, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            seen[n] = out
            return out

    with torch.no_grad():
        Recorder(gm).run(*args)
    return seen


def _lower(sub: Any, example: tuple[Any, ...]) -> tuple[bytes, dict[str, Any], dict[str, int]]:
    """The unit as a .pte buffer, with its delegation summary and op counts (the packager's own)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from packager.export.executorch import delegation_summary

    ep = torch.export.export(sub, example, strict=False)
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    delegation, ops = delegation_summary(edge.exported_program())
    return edge.to_executorch().buffer, delegation, ops


def _cache_dir(etrecord: Path) -> Path | None:
    """Where the lowered units of this ETRecord are kept (lowering costs seconds per unit; the virtual device
    and the host profile the same artifact). Keyed by the ETRecord's sha256, the executorch version and this
    module's code; None when the cache is off (``MPK_CACHE_DIR`` unwritable)."""
    import hashlib

    from packager.cache import cache_dir

    h = hashlib.sha256()
    with etrecord.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    from importlib import metadata

    h.update(metadata.version("executorch").encode() + Path(__file__).read_bytes())
    path = cache_dir() / "estimates" / h.hexdigest()[:32]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def _lower_cached(cache: Path | None, index: int, unit: str, sub: Any,
                  example: tuple[Any, ...]) -> tuple[bytes, dict[str, Any], dict[str, int]]:  # fmt: skip
    import json

    if cache is not None:
        pte, meta = cache / f"{index}.pte", cache / f"{index}.json"
        try:
            doc = json.loads(meta.read_text())
            if doc.get("unit") == unit:
                return pte.read_bytes(), doc["delegation"], doc["ops"]
        except (OSError, ValueError, KeyError):
            pass
    buffer, delegation, ops = _lower(sub, example)
    if cache is not None:
        try:
            (cache / f"{index}.pte").write_bytes(buffer)
            doc = {"unit": unit, "delegation": delegation, "ops": ops}
            (cache / f"{index}.json").write_text(json.dumps(doc, default=str))
        except OSError:
            pass  # a cache that cannot be written is only slower
    return buffer, delegation, ops


def _time(buffer: bytes, example: tuple[Any, ...], runs: int, warmup: int) -> list[float]:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(buffer)
    method = program.load_method("forward")
    args = list(example)
    for _ in range(warmup):
        method.execute(args)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        method.execute(args)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def estimate(etrecord: Path, opmap: dict[str, Any], inputs: Sequence[np.ndarray], *, runs: int = 20,
             warmup: int = 3, max_seconds: float = 600.0) -> Profile:  # fmt: skip
    """Per-unit estimate of an ExecuTorch program (module docstring). ``inputs``: one sample, as the timed loop's."""
    import torch
    from executorch.devtools.etrecord import parse_etrecord

    deadline = time.monotonic() + max_seconds
    cache = _cache_dir(Path(etrecord))
    record = parse_etrecord(str(etrecord))
    if record.exported_program is None:
        raise ValueError(f"{etrecord.name} holds no exported program to lower units from")
    gm = record.exported_program.module()
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
    values = _values(gm, args)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    segments = _segments(gm, dict(opmap.get("modules") or {}), list(opmap.get("units") or []))
    for i, (unit, nodes) in enumerate(segments):
        if time.monotonic() > deadline:
            notes.append(f"stopped after {max_seconds:.0f} s: units from {unit!r} on were not estimated")
            break
        if not any(any(u not in nodes for u in n.users) for n in nodes):
            continue  # nothing of it is used (an assertion): no time to estimate
        sub, ins = _subgraph(gm, nodes)
        example = tuple(v.contiguous() if isinstance(v, torch.Tensor) else v for v in (values[a] for a in ins))
        try:
            buffer, delegation, ops = _lower_cached(cache, i, unit, sub, example)
            times = _time(buffer, example, runs, warmup)
        except Exception as e:  # a unit the exporter cannot take alone: said, never filled in
            from packager.export.base import describe_failure

            notes.append(f"unit {unit!r} could not be lowered and timed on its own: {describe_failure(e)}")
            continue
        rows.append({
            "name": unit, "op_type": f"subgraph ({sum(ops.values())} ops)", "provider": delegation.get("delegate"),
            "delegated": delegation["delegated_ops"] == delegation["total_ops"] and delegation["total_ops"] > 0,
            "calls": len(times), "total_ms": float(sum(times)), "module": unit if unit != "(root)" else "",
            "unit": unit, "estimated": True, "op_counts": ops, "delegated_ops": int(delegation["delegated_ops"]),
        })  # fmt: skip
    grand = sum(r["total_ms"] for r in rows)
    for r in rows:
        r["mean_ms"] = r["total_ms"] / r["calls"] if r["calls"] else 0.0
        r["share"] = r["total_ms"] / grand if grand > 0 else 0.0
    return {"status": ProfileStatus.ESTIMATED.value, "method": METHOD, "granularity": "module", "runs": runs,
            "ops": rows, "notes": notes}  # type: ignore[typeddict-item]  # fmt: skip
