"""report.md: reads well as a CI step summary or a PR comment. The verdict is the first line.

Real-device and emulated checks sit in separate tables; emulated ones are
headed "emulated (host CPU: ...)", so a host-CPU number is never read as a
phone's.
"""

from __future__ import annotations

from typing import Any

from runners.report import ReportWriter

ICON = {"pass": "✅ pass", "fail": "❌ fail", "inconclusive": "⚠️ inconclusive", "error": "🛑 error"}


def fmt_num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "n/a"
    s = f"{v:.6g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{s} {unit}".rstrip()


def measured(c: Any) -> tuple[str, str, str]:
    """(measured, interval, target) as table cells for one check."""
    from runners.gate.verdict import UNITS

    unit = UNITS.get(c.metric, "")
    if c.metric == "regression":
        p = c.extra.get("p_value")
        meas = f"{c.estimate:+.1%} median (p={p:.2g})" if c.estimate is not None else "n/a"
        ci = f"[{c.interval[0]:+.1%}, {c.interval[1]:+.1%}]" if c.interval else ""
        return meas, ci, f"≤ +{c.budget:.0%} slower"
    if c.metric == "cell_ran":
        return "did not run", "", "runs"
    meas = fmt_num(c.estimate, unit)
    ci = ""
    if c.interval and c.interval[0] != c.interval[1]:
        ci = f"[{fmt_num(c.interval[0])}, {fmt_num(c.interval[1])}]"
    op = "≥" if c.direction == "min" else "≤"
    return meas, ci, f"{op} {fmt_num(c.budget, unit)}"


def _table(checks: list[Any]) -> list[str]:
    lines = [
        "| Verdict | Device | Artifact | Metric | Measured | 95% CI | Target |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        meas, ci, target = measured(c)
        lines.append(f"| {ICON[c.verdict]} | {c.device_id} | {c.artifact_id} | {c.metric} | {meas} | {ci} | {target} |")
    return lines


def host_cpus(outcome: Any) -> str:
    cpus = sorted(
        {
            str((c.get("device") or {}).get("host_cpu") or "unknown")
            for c in outcome.results.get("cells", [])
            if c.get("emulated")
        }
    )
    return ", ".join(cpus)


def render_markdown(outcome: Any) -> str:
    r = outcome.results
    env = r.get("environment") or {}
    man = r.get("manifest") or {}
    model = man.get("model")
    model = model.get("name") if isinstance(model, dict) else model
    head = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "error": "🛑"}[outcome.verdict]
    lines = [f"## {head} mpk gate: {outcome.summary}", ""]
    lines.append(
        f"Run `{r.get('run_id')}` of model `{model}` at git `{env.get('git_revision') or 'unknown'}`, "
        f"mpk {env.get('mpk_version') or '?'}; exit code {outcome.exit_code}."
    )
    if outcome.baseline:
        lines.append(f"Regressions compared with {outcome.baseline}.")
    lines.append("")
    real = [c for c in outcome.checks if not c.emulated]
    emu = [c for c in outcome.checks if c.emulated]
    failing = [c for c in outcome.checks if c.verdict != "pass"]
    if failing:
        lines += ["### Needs attention", ""]
        lines += [f"- **{c.name}** ({c.verdict}{', emulated' if c.emulated else ''}): {c.message}" for c in failing]
        lines.append("")
    if real:
        lines += ["### Real devices", "", *_table(real), ""]
    if emu:
        lines += [f"### Emulated (host CPU: {host_cpus(outcome)})", ""]
        lines += ["These numbers were measured on the host CPU standing in for a device, not on a phone.", ""]
        lines += [*_table(emu), ""]
    if not outcome.checks:
        lines += ["No budget or regression check applied to these results.", ""]
    lines += [
        "### Cells",
        "",
        "| Device | Ran on | Artifact | Outcome | n | p50 | p90 | Peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r.get("cells", []):
        res = c.get("result") or {}
        st = res.get("stats") or {}
        mem = (res.get("memory") or {}).get("peak_rss_mb")
        ran = str(c.get("ran_on") or c.get("device_id")) + (" (emulated)" if c.get("emulated") else "")
        word, err = str(c["outcome"]).replace("_", " "), str(c.get("error") or "")
        status = word if c["outcome"] == "ok" else err if err.startswith(f"{word}:") else f"{word}: {err}".strip()
        lines.append(
            f"| {c.get('device_id')} | {ran} | {c.get('artifact_id')} | {status} | {st.get('n', '')} | "
            f"{fmt_num(st.get('p50_ms'), 'ms')} | {fmt_num(st.get('p90_ms'), 'ms')} | {fmt_num(mem, 'MB')} |"
        )
    lines.append("")
    from runners.report.profiles import markdown as profile_markdown

    lines += profile_markdown(r)
    if outcome.warnings or outcome.notes:
        lines += ["### Notes", ""]
        lines += [f"- ⚠️ {w}" for w in outcome.warnings] + [f"- {n}" for n in outcome.notes]
        lines.append("")
    return "\n".join(lines)


class MarkdownReport(ReportWriter):
    filename = "report.md"

    def render(self, outcome: Any) -> str:
        return render_markdown(outcome)
