"""report.html: one self-contained page (inline CSS, inline SVG, no scripts, fonts or network).

Sections: verdict and checks (target next to actual), latency distribution per
device x artifact with the budget drawn, peak memory bars, accuracy vs latency
per variant, history trends (when the gate used history), device facts, and
the raw samples (collapsible tables plus the whole results file as embedded JSON).
Emulated cells get their own plots, headed with the host CPU that ran them.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from runners.report import ReportWriter, svg
from runners.report.markdown import host_cpus, measured

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1000px;color:#222;
 padding:0 12px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f5f5f5}td.n{white-space:nowrap}.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}.inconclusive{color:#9a6700}
.error{color:#8250df;font-weight:bold}.verdict{font-size:20px;padding:10px 14px;border-radius:6px;background:#f6f8fa}
.emu{background:#fff8c5;padding:6px 10px;border-left:4px solid #d4a72c}details{margin:6px 0}
.samples{font-family:ui-monospace,monospace;font-size:11px;word-break:break-all;max-width:950px}
"""


def _budget_for(outcome: Any, cell: dict[str, Any], metrics: tuple[str, ...]) -> tuple[float | None, str | None]:
    for m in metrics:
        for c in outcome.checks:
            if c.device_id == cell.get("device_id") and c.artifact_id == cell.get("artifact_id") and c.metric == m:
                return c.budget, m
    return None, None


def _label(cell: dict[str, Any]) -> str:
    return f"{cell.get('device_id')} / {cell.get('artifact_id')}"


def _checks_table(checks: list[Any]) -> str:
    rows = []
    for c in checks:
        meas, ci, target = measured(c)
        emu = " (emulated)" if c.emulated else ""
        rows.append(
            f'<tr><td class="{c.verdict}">{c.verdict}</td><td>{escape(c.device_id)}{emu}</td>'
            f"<td>{escape(c.artifact_id)}</td><td>{escape(c.metric)}</td><td class=n>{escape(meas)}</td>"
            f"<td class=n>{escape(ci)}</td><td class=n>{escape(target)}</td><td>{escape(c.message)}</td></tr>"
        )
    head = "<tr><th>Verdict</th><th>Device</th><th>Artifact</th><th>Metric</th><th>Measured</th><th>95% CI</th>"
    return f"<table>{head}<th>Target</th><th>Detail</th></tr>{''.join(rows)}</table>"


def _latency_section(outcome: Any, cells: list[dict[str, Any]]) -> str:
    rows = []
    for c in cells:
        samples = (c.get("result") or {}).get("samples_ms") or []
        budget, metric = _budget_for(outcome, c, ("p90_ms", "p50_ms", "p99_ms"))
        label = _label(c) + (f" ({metric[:-3]} budget)" if metric else "")
        rows.append((label, [float(v) for v in samples], budget))
    return svg.latency_strips(rows) if rows else "<p>No latency samples.</p>"


def _memory_section(outcome: Any, cells: list[dict[str, Any]]) -> str:
    rows = []
    for c in cells:
        mem = ((c.get("result") or {}).get("memory") or {}).get("peak_rss_mb")
        budget, _ = _budget_for(outcome, c, ("peak_mem_mb",))
        rows.append((_label(c), mem, budget))
    if not any(r[1] is not None for r in rows):
        return "<p>No memory measurements.</p>"
    return svg.bars(rows, unit="peak RSS, MB")


def _accuracy_section(cells: list[dict[str, Any]]) -> str:
    for key, name in (("top1_agreement", "top-1 agreement with fp32"), ("cosine", "cosine similarity to fp32")):
        pts = []
        for c in cells:
            res = c.get("result") or {}
            acc = (res.get("accuracy") or {}).get(key)
            p50 = (res.get("stats") or {}).get("p50_ms")
            if acc is not None and p50 is not None:
                pts.append((_label(c), float(p50), float(acc)))
        if pts:
            return svg.scatter(pts, xlabel="p50 latency, ms", ylabel=name)
    return "<p>No on-device accuracy measurements.</p>"


def _trend_section(outcome: Any) -> str:
    if not outcome.trends:
        return "<p>No history used (run <code>mpk gate --history</code> to record and compare runs).</p>"
    series = {
        f"{d} / {a} p50": [p.p50_ms for p in pts if p.p50_ms is not None] for (d, a), pts in outcome.trends.items()
    }
    rows = []
    for (d, a), pts in outcome.trends.items():
        for p in pts:
            rows.append(
                f"<tr><td>{escape(d)}</td><td>{escape(a)}</td><td>{escape(p.created_utc)}</td>"
                f"<td>{escape(str(p.git_revision or ''))}</td><td>{p.p50_ms or 0:.3f}</td><td>{p.p90_ms or 0:.3f}</td>"
                f"<td>{'yes' if p.accepted else 'no'}</td></tr>"
            )
    table = (
        "<details><summary>history table</summary><table><tr><th>Device</th><th>Artifact</th><th>Date</th>"
        f"<th>Git</th><th>p50 ms</th><th>p90 ms</th><th>Accepted</th></tr>{''.join(rows)}</table></details>"
    )
    return svg.trend_lines(series, unit="p50 ms") + table


def _fact(v: Any) -> str:
    if v is None:
        return ""
    return json.dumps(v) if isinstance(v, dict | list) else str(v)


def _facts_table(results: dict[str, Any]) -> str:
    seen: dict[str, dict[str, Any]] = {}
    for c in results.get("cells", []):
        seen.setdefault(str(c.get("ran_on") or c.get("device_id")), {"cell": c})
    keys: list[str] = []
    for v in seen.values():
        for k in v["cell"].get("device") or {}:
            if k not in keys:
                keys.append(k)
    head = "".join(f"<th>{escape(k)}</th>" for k in ["device", "emulated", *keys])
    rows = []
    for name, v in seen.items():
        facts = v["cell"].get("device") or {}
        tds = "".join(f"<td>{escape(_fact(facts.get(k)))}</td>" for k in keys)
        rows.append(f"<tr><td>{escape(name)}</td><td>{'yes' if v['cell'].get('emulated') else 'no'}</td>{tds}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _samples_section(results: dict[str, Any]) -> str:
    parts = []
    for c in results.get("cells", []):
        s = (c.get("result") or {}).get("samples_ms") or []
        text = ", ".join(f"{v:.4f}" for v in s)
        parts.append(
            f"<details><summary>{escape(_label(c))}: {len(s)} samples (ms)</summary>"
            f"<p class=samples>{text}</p></details>"
        )
    # a JSON data block is inert (never executed); '</' is escaped so it cannot close the element
    blob = json.dumps(results, default=str).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="mpk-results">{blob}</script>')
    return "".join(parts)


def render_html(outcome: Any) -> str:
    r = outcome.results
    env = r.get("environment") or {}
    cells = [c for c in r.get("cells", []) if c["outcome"] == "ok"]
    real = [c for c in cells if not c.get("emulated")]
    emu = [c for c in cells if c.get("emulated")]
    libs = ", ".join(f"{k} {v}" for k, v in sorted((env.get("libraries") or {}).items()))
    out = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>mpk report: {escape(outcome.verdict)}</title><style>{CSS}</style></head><body>",
        f"<h1>mpk report — run {escape(str(r.get('run_id')))}</h1>",
        f'<p class="verdict {outcome.verdict}">{escape(outcome.summary)} (exit code {outcome.exit_code})</p>',
        f"<p>git {escape(str(env.get('git_revision') or 'unknown'))}, "
        f"mpk {escape(str(env.get('mpk_version') or '?'))}, python {escape(str(env.get('python') or '?'))}, "
        f"{escape(str(env.get('platform') or ''))}<br>{escape(libs)}</p>",
    ]
    if outcome.baseline:
        out.append(f"<p>Regressions compared with {escape(outcome.baseline)}.</p>")
    out += [f"<p>⚠️ {escape(w)}</p>" for w in outcome.warnings]
    out += ["<h2>Checks</h2>", _checks_table(outcome.checks) if outcome.checks else "<p>No check applied.</p>"]
    for title, group, note in (
        ("real devices", real, ""),
        (
            f"emulated (host CPU: {host_cpus(outcome)})",
            emu,
            '<p class="emu">Emulated: measured on the host CPU standing in for a device, not on a phone.</p>',
        ),
    ):
        if not group:
            continue
        out += [f"<h2>Latency distribution — {escape(title)}</h2>", note, _latency_section(outcome, group)]
        out += [f"<h2>Peak memory — {escape(title)}</h2>", _memory_section(outcome, group)]
        out += [f"<h2>Accuracy vs latency — {escape(title)}</h2>", _accuracy_section(group)]
    from runners.report.profiles import html as profile_html

    out.append(profile_html(r))
    out += ["<h2>History</h2>", _trend_section(outcome)]
    out += ["<h2>Device facts</h2>", _facts_table(r)]
    out += ["<h2>Settings</h2>", f"<pre>{escape(json.dumps(r.get('config') or {}, indent=2, default=str))}</pre>"]
    out += ["<h2>Raw samples</h2>", _samples_section(r), "</body></html>"]
    return "\n".join(out) + "\n"


class HtmlReport(ReportWriter):
    filename = "report.html"

    def render(self, outcome: Any) -> str:
        return render_html(outcome)
