"""Reports from one results file and the gate's outcome: report.json, report.md, junit.xml, report.html.

Writers are registered by name (:data:`WRITERS`), each a :class:`ReportWriter`
with the file name it writes; :func:`write_reports` runs them all::

    from runners.gate import evaluate, load_results
    from runners.report import write_reports
    paths = write_reports(evaluate(load_results("results.json"), rules), Path("out/report"))
    paths["html"]   # out/report/report.html

Every report is self-describing (schema version, resolved config, device facts,
library versions, git revision) and puts the target next to the actual.
Emulated cells are always labelled as such, with the host CPU that ran them.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from mpk.errors import OutputNotWritable
from mpk.registry import Registry


class ReportWriter(abc.ABC):
    """Renders a :class:`runners.gate.GateOutcome` to one text file."""

    filename: str = ""

    @abc.abstractmethod
    def render(self, outcome: Any) -> str: ...


WRITERS: Registry[type[ReportWriter]] = Registry("report writer", ReportWriter)
WRITERS.register("json", "runners.report.json_report:JsonReport")
WRITERS.register("md", "runners.report.markdown:MarkdownReport")
WRITERS.register("junit", "runners.report.junit:JUnitReport")
WRITERS.register("html", "runners.report.html:HtmlReport")


def write_reports(outcome: Any, out_dir: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write each named report (default: all) into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputNotWritable(f"cannot create report directory {out_dir}: {e.strerror or e}") from e
    paths: dict[str, Path] = {}
    for name in names or WRITERS.names():
        writer = WRITERS.get(name)()
        path = out_dir / writer.filename
        text = writer.render(outcome)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            raise OutputNotWritable(f"cannot write {path}: {e.strerror or e}") from e
        paths[name] = path
    return paths
