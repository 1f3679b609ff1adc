"""Per-operator profiles: from a runtime's raw timings to a table mapped back to the PyTorch source.

One definition of every profile number, used by the host runner, by ``mpk bench`` (which maps a profile a
phone sent back onto the package's op map), by the reports, and ported to Kotlin for the Android app
(``android_app/.../contract/Profile.kt``, checked number by number against this module):

* an op row's ``total_ms`` is the sum of its kernel times over all profiled runs, ``mean_ms`` = total / calls,
  ``share`` = its total / the total of every row; ``per_run_ms`` of the profile = the sum of every row's total /
  the number of profiled runs. Example: two runs, conv 3 + 5 ms, relu 1 + 1 ms -> conv total 8, mean 4,
  share 0.8; per run (8 + 2) / 2 = 5 ms;
* rows keep the runtime's execution order (the first run's); tables sort by time where they show them;
* ``module`` is the PyTorch module the op came from (``_blocks.3._depthwise_conv``, a key of
  ``dict(model.named_modules())``), ``unit`` the rollup level the side-by-side tables use (the model's top
  level, descending into ModuleList/Sequential: ``_blocks.3``), both read from the op map the packager wrote
  at export time (``mpk.opmap/1``, :mod:`mpk.contract.profile`). An op the map cannot place keeps
  ``module: null`` and counts as unattributed; nothing is guessed from timings.

Pure Python (no numpy, no runtime imports): the light install renders reports with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: op kinds that never stand alone on a CPU runtime: folded into the op before them (BatchNorm into a conv,
#: an activation into its producer's epilogue), pure views, or quantization bookkeeping around an op
_TRIVIAL = re.compile(
    r"(batch_?norm|batchnormalization|relu6?$|hardtanh|^clip$|clamp|dropout|identity|view|reshape|flatten|squeeze|"
    r"unsqueeze|getitem|quantize|dequantize|_to_copy|clone|alias|detach|contiguous|expand_copy|cast$)",
    re.IGNORECASE,
)
#: activations a CPU runtime fuses into the conv / matmul that produces their input (ORT's Conv+Clip,
#: XNNPACK's output_min/max): a fused kernel named after the activation's output is its producer's time
_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Add", "Sum"}
_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger", "MatMulInteger", "FusedConv"}
#: suffixes ONNX Runtime's graph transformers append to the node or tensor a fused node came from
_ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc|_output_\d+|_fused\w*|_quant|_dequant|_q|_dq)$")
_ORT_PREFIX = re.compile(r"^(fused |Fused_?)")
ROOT_UNIT = "(root)"
_NAMESPACES = ("aten", "edge", "quantized_decomposed", "torchao", "prims", "dim_order_ops")


def is_trivial(op_type: str) -> bool:
    """Whether ``op_type`` (an ATen, edge or ONNX name) is one a CPU runtime folds into its neighbour.

    >>> is_trivial("aten.batch_norm.default"), is_trivial("Clip"), is_trivial("relu_.default"), is_trivial("Conv")
    (True, True, True, False)
    """
    parts = op_type.replace("::", ".").split(".")
    core = parts[1] if len(parts) > 1 and parts[0] in _NAMESPACES else parts[0]  # relu.default -> relu
    return bool(_TRIVIAL.search(core.rstrip("_")))  # relu_ is relu, done in place


def unit_of(module: str | None, units: Sequence[str]) -> str | None:
    """The rollup unit ``module`` belongs to: the longest unit that is it or contains it; root ops get ``(root)``.

    >>> unit_of("_blocks.3._depthwise_conv", ["_conv_stem", "_blocks.3", "_blocks.30"])
    '_blocks.3'
    >>> unit_of("", ["_conv_stem"]), unit_of(None, ["_conv_stem"])
    ('(root)', None)
    """
    if module is None:
        return None
    best = None
    for u in units:
        if (module == u or module.startswith(u + ".")) and (best is None or len(u) > len(best)):
            best = u
    return best if best is not None else ROOT_UNIT


def assign_units(nodes: Sequence[tuple[str | None, str]], units: Sequence[str]) -> list[str | None]:
    """The unit of each node of one graph, in its execution order, as the side-by-side tables count them.

    ``nodes`` are ``(module path, op type)``. Consecutive nodes of one unit form a segment; a segment of
    trivial ops only (:func:`is_trivial`: the BatchNorm, ReLU6 or reshape a runtime fuses into what came
    before) joins the segment before it, and a node without a module joins its neighbour's. So EfficientNet's
    stem conv, ``_bn0`` and the root-level ReLU6 after it are one unit, ``_conv_stem``, on every backend,
    whichever ops each backend's graph still shows.

    >>> assign_units([("stem", "conv"), ("bn", "batch_norm"), ("", "relu"), ("blk.0.c", "conv")], ["stem", "bn",
    ...              "blk.0"])
    ['stem', 'stem', 'stem', 'blk.0']
    """
    raw = [unit_of(m, units) for m, _ in nodes]
    filled: list[str | None] = list(raw)  # a node without a module goes with the node before it (or after)
    for i in range(1, len(filled)):
        if filled[i] is None:
            filled[i] = filled[i - 1]
    for i in range(len(filled) - 2, -1, -1):
        if filled[i] is None:
            filled[i] = filled[i + 1]
    segments: list[list[int]] = []
    for i, u in enumerate(filled):
        if segments and filled[segments[-1][0]] == u:
            segments[-1].append(i)
        else:
            segments.append([i])
    real = [not all(raw[i] is None or is_trivial(nodes[i][1]) for i in seg) for seg in segments]
    labels: list[str | None] = []
    for k in range(len(segments)):
        if real[k] or not labels:
            nxt = next((j for j in range(k, len(segments)) if real[j]), k)
            labels.append(filled[segments[nxt][0]])  # a leading trivial segment joins the first real one
        else:
            labels.append(labels[-1])
    out: list[str | None] = [None] * len(nodes)
    for seg, label in zip(segments, labels, strict=True):
        for i in seg:
            out[i] = label
    return out


# ---------------------------------------------------------------- raw events -> rows


@dataclass(frozen=True)
class Event:
    """One kernel execution: a node's name, its op type, where it ran, how long (microseconds), which run."""

    name: str
    op_type: str
    provider: str | None
    dur_us: float
    run: int = 0


def ort_events(trace: Sequence[Mapping[str, Any]]) -> tuple[list[Event], int]:
    """The per-node kernel executions of an ONNX Runtime profile (``SessionOptions.enable_profiling``'s JSON).

    ORT writes one ``{"cat": "Node", "name": "<node>_kernel_time", "dur": us, "args": {"op_name",
    "provider"}}`` per node per run, and one ``{"cat": "Session", "name": "model_run"}`` per run; the node
    events of run *k* fall inside the *k*-th ``model_run``. Returns (events, runs seen).
    """
    runs = sorted(
        (float(e.get("ts", 0)), float(e.get("ts", 0)) + float(e.get("dur", 0)))
        for e in trace
        if isinstance(e, Mapping) and e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    out: list[Event] = []
    for e in trace:
        if not isinstance(e, Mapping) or e.get("cat") != "Node":
            continue
        name = str(e.get("name", ""))
        if not name.endswith("_kernel_time"):
            continue
        args = e.get("args") or {}
        ts = float(e.get("ts", 0))
        run = next((k for k, (a, b) in enumerate(runs) if a <= ts <= b), max(len(runs) - 1, 0))
        out.append(Event(name[: -len("_kernel_time")], str(args.get("op_name", "?")), args.get("provider"),
                         float(e.get("dur", 0)), run))  # fmt: skip
    return out, len(runs)


def aggregate(events: Iterable[Event], runs: int) -> list[dict[str, Any]]:
    """One row per node, in first-seen order: calls, total and mean ms, share of all rows' total.

    >>> rows = aggregate([Event("c", "Conv", "CPU", 3000, 0), Event("r", "Relu", "CPU", 1000, 0),
    ...                   Event("c", "Conv", "CPU", 5000, 1), Event("r", "Relu", "CPU", 1000, 1)], runs=2)
    >>> [(r["name"], r["calls"], r["total_ms"], r["mean_ms"], r["share"]) for r in rows]
    [('c', 2, 8.0, 4.0, 0.8), ('r', 2, 2.0, 1.0, 0.2)]
    """
    rows: dict[str, dict[str, Any]] = {}
    for ev in events:
        r = rows.get(ev.name)
        if r is None:
            r = rows[ev.name] = {"name": ev.name, "op_type": ev.op_type, "provider": ev.provider,
                                 "delegated": _delegated(ev.provider), "calls": 0, "total_ms": 0.0}  # fmt: skip
        r["calls"] += 1
        r["total_ms"] += ev.dur_us / 1000.0
    grand = sum(r["total_ms"] for r in rows.values())
    out = []
    for r in rows.values():
        r["mean_ms"] = r["total_ms"] / r["calls"] if r["calls"] else 0.0
        r["share"] = r["total_ms"] / grand if grand > 0 else 0.0
        r["estimated"] = False
        out.append(r)
    return out


def _delegated(provider: Any) -> bool | None:
    """ONNX Runtime: an op runs "delegated" when an execution provider other than the default CPU one took it."""
    if provider is None:
        return None
    return str(provider) != "CPUExecutionProvider"


def per_run_ms(profile: Mapping[str, Any]) -> float | None:
    """The profile's op time per inference: every row's total / the profiled runs (estimates: their sum)."""
    ops = profile.get("ops") or []
    if not ops:
        return None
    total = sum(float(o["total_ms"]) for o in ops)
    return total / max(int(profile.get("runs") or 1), 1)


# ---------------------------------------------------------------- mapping rows to the PyTorch source


class OpIndex:
    """An op map (``mpk.opmap/1``) indexed for name resolution: node name -> node, tensor -> producing node."""

    def __init__(self, opmap: Mapping[str, Any]) -> None:
        self.opmap = opmap
        self.units: list[str] = list(opmap.get("units") or [])
        self.modules: dict[str, str] = dict(opmap.get("modules") or {})
        self.nodes: dict[str, Mapping[str, Any]] = {}
        self.producer: dict[str, Mapping[str, Any]] = {}
        self.by_handle: dict[int, Mapping[str, Any]] = {}
        for n in opmap.get("nodes") or []:
            self.nodes.setdefault(str(n["name"]), n)
            for t in n.get("outputs") or []:
                self.producer.setdefault(str(t), n)
            if n.get("debug_handle") is not None:
                self.by_handle.setdefault(int(n["debug_handle"]), n)

    def resolve(self, name: str) -> tuple[Mapping[str, Any] | None, str]:
        """The op map node a runtime op named ``name`` came from, and how it was found.

        ``exact`` (the node itself), ``renamed`` (a name ONNX Runtime's transformers derived from the node's,
        ``node_Conv_877_token_1``), ``output`` (named after the tensor the node produces, ``hardtanh_2_nchwc``)
        or ``fused`` (named after an activation's output: the activation's producer, whose kernel it joined).
        ``(None, "unmapped")`` when nothing matches.
        """
        if name in self.nodes:
            return self.nodes[name], "exact"
        base = _ORT_PREFIX.sub("", name)
        if base in self.nodes:
            return self.nodes[base], "renamed"
        for _ in range(4):
            stripped = _ORT_SUFFIX.sub("", base)
            if stripped == base:
                break
            base = stripped
            if base in self.nodes:
                return self.nodes[base], "renamed"
        node = self.producer.get(base)
        if node is None:
            return None, "unmapped"
        if node.get("op_type") in _ACTIVATIONS:
            for t in node.get("inputs") or []:
                src = self.producer.get(str(t))
                if src is not None and src.get("op_type") in _PRODUCERS:
                    return src, "fused"
        return node, "output"


def attach_sources(profile: dict[str, Any], opmap: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill ``module``, ``unit`` and ``source`` of every op row of ``profile`` from ``opmap`` (in place; returned).

    Rows already carrying a module (estimates, whose rows are units) keep it. Without an op map every row
    stays unattributed and the profile says why.
    """
    ops = profile.get("ops") or []
    if opmap is None:
        if ops and not any(o.get("module") is not None for o in ops):
            profile.setdefault("notes", []).append("the package has no op map for this artifact: ops are not "
                                                   "mapped to PyTorch modules")  # fmt: skip
        profile["attributed_share"] = attributed_share(profile) if ops else None
        return profile
    index = OpIndex(opmap)
    for o in ops:
        if o.get("module") is not None and o.get("unit") is not None:
            continue
        node, how = index.resolve(str(o["name"]))
        if node is None:
            o.update(module=None, unit=None, source=None)
            continue
        module = node.get("module")
        o.update(module=module, unit=node.get("unit") or unit_of(module, index.units),
                 source={"node": node["name"], "via": how})  # fmt: skip
    profile["source_map"] = opmap.get("schema_version")
    profile["attributed_share"] = attributed_share(profile) if ops else None
    return profile


def attributed_share(profile: Mapping[str, Any]) -> float:
    """The share of the profile's time whose ops name a PyTorch module (0..1).

    >>> attributed_share({"ops": [{"total_ms": 3.0, "module": "a"}, {"total_ms": 1.0, "module": None}]})
    0.75
    """
    ops = profile.get("ops") or []
    total = sum(float(o["total_ms"]) for o in ops)
    if total <= 0:
        return 0.0
    return sum(float(o["total_ms"]) for o in ops if o.get("module") is not None) / total


def rollup(profile: Mapping[str, Any], *, by: str = "module") -> list[dict[str, Any]]:
    """Time per inference per ``module`` (or per ``unit``), slowest first; unattributed ops under ``None``.

    Each entry: ``{"module": name, "ms": per inference, "share": of the profile, "ops": rows summed}``.

    >>> p = {"runs": 2, "ops": [{"total_ms": 6.0, "unit": "b"}, {"total_ms": 2.0, "unit": "a"},
    ...                         {"total_ms": 2.0, "unit": "b"}]}
    >>> [(r["module"], r["ms"], r["ops"]) for r in rollup(p, by="unit")]
    [('b', 4.0, 2), ('a', 1.0, 1)]
    """
    runs = max(int(profile.get("runs") or 1), 1)
    acc: dict[Any, list[float]] = {}
    for o in profile.get("ops") or []:
        key = o.get(by)
        a = acc.setdefault(key, [0.0, 0])
        a[0] += float(o["total_ms"])
        a[1] += 1
    grand = sum(a[0] for a in acc.values())
    out = [{"module": k, "ms": v[0] / runs, "share": v[0] / grand if grand > 0 else 0.0, "ops": int(v[1])}
           for k, v in acc.items()]  # fmt: skip
    out.sort(key=lambda r: -r["ms"])
    return out


def top_ops(profile: Mapping[str, Any], n: int = 10) -> list[Mapping[str, Any]]:
    """The ``n`` op rows with the most time, slowest first."""
    return sorted(profile.get("ops") or [], key=lambda o: -float(o["total_ms"]))[:n]


def chrome_trace(profile: Mapping[str, Any], *, process: str, thread: str = "inference") -> dict[str, Any]:
    """The profile as Chrome trace JSON (``chrome://tracing``, https://ui.perfetto.dev): one representative inference.

    One complete event (``"ph": "X"``) per op row, in execution order, each lasting the row's time per
    inference (``total_ms / runs``), so the events tile one inference end to end; ``ts`` and ``dur`` are
    microseconds, as the Trace Event Format requires. ``args`` carry the module, the unit, the runtime's op
    type and whether the row was measured or estimated.

    >>> t = chrome_trace({"runs": 1, "ops": [{"name": "a", "op_type": "Conv", "total_ms": 1.5, "calls": 1}]},
    ...                  process="host / onnx-fp32")
    >>> [(e["ph"], e["ts"], e["dur"]) for e in t["traceEvents"] if e["ph"] == "X"]
    [('X', 0.0, 1500.0)]
    """
    runs = max(int(profile.get("runs") or 1), 1)
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "tid": 1, "name": "process_name", "args": {"name": process}},
        {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": thread}},
    ]
    ts = 0.0
    for o in profile.get("ops") or []:
        dur = float(o["total_ms"]) / runs * 1000.0
        events.append({
            "ph": "X", "pid": 1, "tid": 1, "name": str(o["name"]), "cat": str(o.get("op_type") or "op"),
            "ts": round(ts, 3), "dur": round(dur, 3),
            "args": {"module": o.get("module"), "unit": o.get("unit"), "op_type": o.get("op_type"),
                     "provider": o.get("provider"), "delegated": o.get("delegated"), "calls": o.get("calls"),
                     "estimated": bool(o.get("estimated")), "share": o.get("share")},
        })  # fmt: skip
        ts += dur
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"status": profile.get("status"), "method": profile.get("method"), "runs": runs}}  # fmt: skip


def compare_units(profiles: Mapping[str, Mapping[str, Any]], *, top: int = 5) -> tuple[list[str], list[dict]]:
    """The side-by-side table: the ``top`` slowest units over all ``profiles`` (label -> profile), each unit's
    time per inference in every profile (None where that profile has no such unit).

    Units are ranked by their largest time in any profile, so a unit slow on one runtime only is shown.
    Returns (units, rows) with rows ``{"unit": u, "cells": {label: {"ms", "share", "status"}}}``.
    """
    per: dict[str, dict[str, dict[str, Any]]] = {}
    for label, prof in profiles.items():
        status = prof.get("status")
        for r in rollup(prof, by="unit"):
            if r["module"] is None:
                continue
            per.setdefault(r["module"], {})[label] = {"ms": r["ms"], "share": r["share"], "status": status}
    ranked = sorted(per, key=lambda u: -max(c["ms"] for c in per[u].values()))[:top]
    return ranked, [{"unit": u, "cells": per[u]} for u in ranked]
