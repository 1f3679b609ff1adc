"""Report formats: golden files for report.md and junit.xml, and a self-describing report.json.

The results are generated from seeded samples in the bench's real schema (no
phone exists here), so every number is reproducible; golden files need no
normalisation beyond the report's own output. Regenerate after an intended
change with ``MPK_UPDATE_GOLDEN=1 pytest tests/integration/test_report_golden.py``.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runners.gate import evaluate
from runners.gate.budgets import parse_budgets
from runners.gate.regression import baseline_from_results
from runners.report import write_reports
from tests.gate_factory import cell, results, samples

GOLDEN = Path(__file__).parent / "gate_golden"


def sample_outcome():
    """fp32 misses its budget, int8 meets it, int8 regressed vs the baseline, CoreML cannot run, one emulated cell."""
    raw = [
        {"device": "pixel-7", "p90_ms": 15, "peak_mem_mb": 200, "accuracy": {"top1_agreement_min": 0.98}},
        {"device": "pixel-7", "artifact": "*-int8", "p90_ms": 12},
        {"device": "*", "emulated": True, "p50_ms": 60},
    ]
    rules, problems = parse_budgets(raw)
    assert problems == []
    cur = results(
        [
            cell("pixel-7", "executorch-fp32", samples(20, 120, 1), peak_mb=180.0),
            cell("pixel-7", "executorch-int8", samples(9, 120, 2), peak_mb=110.5, top1=0.99),
            cell("pixel-7", "coreml-fp16", outcome="unsupported", error="coreml artifacts need macOS"),
            cell("pixel-7-virtual", "executorch-int8", samples(45, 120, 3), emulated=True, peak_mb=140.0),
        ]
    )
    base = results([cell("pixel-7", "executorch-int8", samples(8, 120, 4))], run_id="run-0")
    return evaluate(
        cur,
        rules,
        sizes={},
        baseline_lookup=baseline_from_results(base, "baseline.json"),
        baseline_label="baseline.json",
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_reports(sample_outcome(), tmp_path_factory.mktemp("report"))


@pytest.mark.parametrize("name", ["md", "junit"])
def test_golden(written: dict[str, Path], name: str) -> None:
    got = written[name].read_text()
    golden = GOLDEN / written[name].name
    if os.environ.get("MPK_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"{name} changed; see {written[name]}"


def test_markdown_reads_as_a_summary(written: dict[str, Path]) -> None:
    md = written["md"].read_text().splitlines()
    assert md[0].startswith("## ❌ mpk gate: FAIL: 2 failed")
    text = "\n".join(md)
    assert "### Emulated (host CPU: Test CPU @ 2.0GHz)" in text
    real, emu = text.split("### Emulated")[0], text.split("### Emulated")[1].split("### Cells")[0]
    assert "pixel-7-virtual" not in real and "pixel-7-virtual" in emu  # never mixed silently


def test_junit_parses_one_testcase_per_check(written: dict[str, Path]) -> None:
    root = ET.parse(written["junit"]).getroot()
    cases = root.findall("./testsuite/testcase")
    outcome = sample_outcome()
    assert len(cases) == len(outcome.checks) == int(root.get("tests"))
    fail = next(
        c
        for c in cases
        if c.get("classname") == "mpk.gate.device.pixel-7.executorch-fp32" and c.get("name") == "p90_ms"
    )
    assert "over budget 15.00 ms" in fail.find("failure").get("message")
    assert int(root.get("failures")) == 2


def test_json_report_is_self_describing(written: dict[str, Path]) -> None:
    doc = json.loads(written["json"].read_text())
    assert doc["schema_version"] == "mpk.report/1" and doc["verdict"] == "fail" and doc["exit_code"] == 1
    assert doc["environment"]["git_revision"] == "abc1234" and doc["environment"]["libraries"]
    assert doc["config"] == {"fallback": "none"} and doc["devices"][0]["facts"]["model"] == "Pixel 7"
    check = next(c for c in doc["gate"]["checks"] if c["name"] == "pixel-7/executorch-fp32 p90_ms")
    assert check["budget"] == 15.0 and check["actual"] > 15.0 and len(check["interval"]) == 2
    assert doc["gate"]["budgets"][0]["limits"]["p90_ms"] == 15.0


def test_html_is_self_contained(written: dict[str, Path]) -> None:
    html = written["html"].read_text()
    assert (
        html.count("<svg") >= 6
        and "<script src" not in html
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert "https://" not in html and "@import" not in html and 'id="mpk-results"' in html
