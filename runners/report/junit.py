"""junit.xml: one testcase per check, so CI systems list budgets like tests.

fail -> <failure> with the numbers; infrastructure error -> <error>;
inconclusive -> <skipped> with the interval and budget (not a pass, not a
fail: measure more). No timings are written, so the file is reproducible.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from runners.report import ReportWriter


def render_junit(outcome: Any) -> str:
    checks = outcome.checks
    counts = {
        "tests": str(len(checks)),
        "failures": str(sum(c.verdict == "fail" for c in checks)),
        "errors": str(sum(c.verdict == "error" for c in checks)),
        "skipped": str(sum(c.verdict == "inconclusive" for c in checks)),
    }
    root = ET.Element("testsuites", {"name": "mpk gate", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "mpk gate", **counts})
    props = ET.SubElement(suite, "properties")
    r = outcome.results
    env = r.get("environment") or {}
    for k, v in (
        ("run_id", r.get("run_id")),
        ("git_revision", env.get("git_revision")),
        ("verdict", outcome.verdict),
        ("exit_code", outcome.exit_code),
    ):
        ET.SubElement(props, "property", {"name": k, "value": str(v)})
    for c in checks:
        kind = "emulated" if c.emulated else "device"
        case = ET.SubElement(
            suite, "testcase", {"classname": f"mpk.gate.{kind}.{c.device_id}.{c.artifact_id}", "name": c.metric}
        )
        if c.verdict == "fail":
            ET.SubElement(case, "failure", {"message": c.message, "type": c.metric}).text = c.message
        elif c.verdict == "error":
            ET.SubElement(case, "error", {"message": c.message, "type": "infrastructure"}).text = c.message
        elif c.verdict == "inconclusive":
            ET.SubElement(case, "skipped", {"message": f"inconclusive: {c.message}"})
        else:
            ET.SubElement(case, "system-out").text = c.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


class JUnitReport(ReportWriter):
    filename = "junit.xml"

    def render(self, outcome: Any) -> str:
        return render_junit(outcome)
