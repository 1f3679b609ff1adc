"""The profile section of report.md and report.html: which module is slow, on every runtime, side by side.

For each cell whose runner ran a profiled pass (``mpk bench --profile``): the profile's status (measured by
the runtime, or mpk's labelled estimate), its total against the unprofiled p50, the share of time placed on a
PyTorch module, the slowest ops and a per-module rollup; then one table putting the same unit (``_blocks.3``)
next to itself across ExecuTorch, ONNX and devices. Numbers come from :mod:`mpk.profiling` only.
"""

from __future__ import annotations

from html import escape
from typing import Any

from mpk.profiling import compare_units, rollup, top_ops
from runners.report import svg

#: rows of the side-by-side table (the slowest units over all profiles)
TOP_UNITS = 5


def profiled_cells(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in results.get("cells", []) if (c.get("result") or {}).get("profile")]


def cell_label(cell: dict[str, Any]) -> str:
    emu = " (emulated)" if cell.get("emulated") else ""
    return f"{cell.get('device_id')}{emu} / {cell.get('artifact_id')}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:+.1%}"


def _ms(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def _per_run(p: dict[str, Any], op: dict[str, Any]) -> float:
    return float(op["total_ms"]) / max(int(p.get("runs") or 1), 1)


def _status(p: dict[str, Any]) -> str:
    if not p.get("ops"):
        return f"{p['status']}: {'; '.join(p.get('limits') or []) or p.get('method', '')}"
    labels = {"measured": "measured by the runtime", "estimated": "ESTIMATE (units timed alone)"}
    label = labels.get(p["status"], p["status"])
    return label + (f", kernel {p['kernel']}" if p.get("kernel") else "")


def side_by_side(cells: list[dict[str, Any]], top: int = TOP_UNITS) -> tuple[list[str], list[str], list[dict]]:
    """(column labels, units, rows) of the "same module" table over every profiled cell with ops."""
    profiles = {cell_label(c): c["result"]["profile"] for c in cells if c["result"]["profile"].get("ops")}
    units, rows = compare_units(profiles, top=top)
    return list(profiles), units, rows


# ---------------------------------------------------------------- markdown


def markdown(results: dict[str, Any]) -> list[str]:
    """The "### Profiles" lines of report.md; empty when no cell was profiled."""
    cells = profiled_cells(results)
    if not cells:
        return []
    lines = ["### Profiles", "",
             "A separate profiled pass after each timed loop: the latencies above are the unprofiled loop's. "
             "`vs p50`: the ops' total per inference against the unprofiled p50; `overhead`: a profiled "
             "inference's wall time against it.", "",
             "| Device | Artifact | Profile | ops ms/inference | p50 ms | vs p50 | overhead | on a module |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        p = c["result"]["profile"]
        share = p.get("attributed_share")
        dev = str(c.get("device_id")) + (" (emulated)" if c.get("emulated") else "")
        lines.append(f"| {dev} | {c.get('artifact_id')} | {_status(p)} | {_ms(p.get('per_run_ms'))} | "
                     f"{_ms(p.get('unprofiled_p50_ms'))} | {_pct(p.get('vs_p50'))} | {_pct(p.get('overhead'))} | "
                     f"{'n/a' if share is None else f'{share:.1%}'} |")  # fmt: skip
    labels, units, rows = side_by_side(cells)
    if units:
        lines += ["", f"**Same module, side by side** (the {len(units)} slowest units, ms per inference; "
                  "est. = estimate)", "", "| Unit | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]  # fmt: skip
        for r in rows:
            vals = []
            for label in labels:
                cell = r["cells"].get(label)
                vals.append("–" if cell is None else f"{cell['ms']:.3f}" + (" est." if cell["status"] == "estimated"
                                                                              else ""))  # fmt: skip
            lines.append(f"| `{r['unit']}` | " + " | ".join(vals) + " |")
    lines.append("")
    for c in cells:
        p = c["result"]["profile"]
        if not p.get("ops"):
            continue
        ops = "; ".join(f"`{o['name']}` {o['op_type']} ({o.get('module') or 'unattributed'}) {_per_run(p, o):.3f} ms"
                        for o in top_ops(p, 3))  # fmt: skip
        lines.append(f"- {cell_label(c)}, slowest: {ops}")
    lines.append("")
    return lines


# ---------------------------------------------------------------- HTML


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def html(results: dict[str, Any]) -> str:
    """The profile section of report.html (inline SVG and tables); empty when no cell was profiled."""
    cells = profiled_cells(results)
    if not cells:
        return ""
    out = ["<h2>Profiles — which module is slow</h2>",
           "<p>A separate profiled pass after each timed loop (the latencies above are the unprofiled loop's). "
           "<b>measured</b>: the runtime timed each op; <b>estimate</b>: mpk timed each unit's subgraph alone "
           "(the runtime cannot time ops), which ignores fusion across units.</p>"]  # fmt: skip
    summary = []
    for c in cells:
        p = c["result"]["profile"]
        share = p.get("attributed_share")
        summary.append([escape(cell_label(c)), escape(_status(p)), _ms(p.get("per_run_ms")),
                        _ms(p.get("unprofiled_p50_ms")), _pct(p.get("vs_p50")), _pct(p.get("overhead")),
                        "n/a" if share is None else f"{share:.1%}", str(len(p.get("ops") or []))])  # fmt: skip
    out.append(_table(["Cell", "Profile", "ops ms/inference", "unprofiled p50 ms", "vs p50", "overhead",
                       "time on a module", "rows"], summary))  # fmt: skip
    labels, units, rows = side_by_side(cells)
    if units:
        out.append(f"<h3>Same module, side by side: the {len(units)} slowest units (ms per inference)</h3>")
        groups = [(r["unit"], [(label, (r["cells"].get(label) or {}).get("ms"),
                                (r["cells"].get(label) or {}).get("status") == "estimated") for label in labels])
                  for r in rows]  # fmt: skip
        out.append(svg.grouped_bars(groups, unit="ms per inference"))
        trows = []
        for r in rows:
            vals = []
            for label in labels:
                cell = r["cells"].get(label)
                vals.append("–" if cell is None else f"{cell['ms']:.3f}" + (" <i>est.</i>" if cell["status"] ==
                                                                              "estimated" else ""))  # fmt: skip
            trows.append([f"<code>{escape(r['unit'])}</code>", *vals])
        out.append(_table(["Unit", *labels], trows))
    for c in cells:
        p = c["result"]["profile"]
        out.append(f"<h3>{escape(cell_label(c))}</h3><p>{escape(_status(p))}. {escape(p.get('method') or '')}</p>")
        for limit in p.get("limits") or []:
            out.append(f'<p class="emu">Limit: {escape(limit)}</p>')
        for note in p.get("notes") or []:
            out.append(f"<p>Note: {escape(note)}</p>")
        if not p.get("ops"):
            continue
        mods = [r for r in rollup(p, by="module")][:10]
        out.append(svg.bars([(str(r["module"]) if r["module"] is not None else "(unattributed)", r["ms"], None)
                             for r in mods], unit="ms per inference, per module", fmt=".3f"))  # fmt: skip
        ops_rows = [[f"<code>{escape(str(o['name']))}</code>", escape(str(o["op_type"])),
                     escape(str(o.get("module") if o.get("module") is not None else "unattributed")),
                     escape({True: "yes", False: "no"}.get(o.get("delegated"), "–")), str(o["calls"]),
                     f"{float(o['total_ms']):.3f}", f"{float(o['mean_ms']):.4f}", f"{float(o['share']):.1%}"]
                    for o in top_ops(p, 15)]  # fmt: skip
        out.append(
            "<details open><summary>slowest ops</summary>"
            + _table(["Op", "Type", "Module", "Delegated", "Calls", "Total ms", "Mean ms", "Share"], ops_rows)
            + "</details>"
        )
        unit_rows = [[escape(str(r["module"])), f"{r['ms']:.3f}", f"{r['share']:.1%}", str(r["ops"])]
                     for r in rollup(p, by="unit")]  # fmt: skip
        out.append("<details><summary>per unit</summary>" + _table(["Unit", "ms per inference", "Share", "Rows"],
                                                                     unit_rows) + "</details>")  # fmt: skip
    return "\n".join(out)
