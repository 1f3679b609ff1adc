"""``mpk gate`` / ``mpk history`` / ``mpk report`` end to end through the real CLI, files and SQLite.

The results files are generated (seeded samples in the bench's real schema,
validated by its real loader) because a phone cannot exist here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpk.cli import main
from runners.gate import GateConfig, run_gate
from tests.gate_factory import DEVICES_YAML, cell, results, samples


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def budgets(tmp_path: Path) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(DEVICES_YAML + "  - {device: pixel-7, artifact: '*', p90_ms: 15, peak_mem_mb: 200}\n")
    return p


def gate(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["gate", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_fp32_misses_int8_meets_exit_1(tmp_path: Path, budgets: Path) -> None:
    doc = results(
        [
            cell("pixel-7", "executorch-fp32", samples(20, 200, 1)),
            cell("pixel-7", "executorch-int8", samples(9, 200, 2)),
        ]
    )
    code, out = gate(
        str(write(tmp_path / "results.json", doc)), "--budgets", str(budgets), "--report", str(tmp_path / "r")
    )
    assert code == 1
    fail = next(ln for ln in out.splitlines() if "FAIL" in ln and "executorch-fp32 p90_ms" in ln)
    assert "95% CI [" in fail and "over budget 15.00 ms" in fail
    assert any("PASS" in ln and "executorch-int8 p90_ms" in ln for ln in out.splitlines())
    lines = out.strip().splitlines()
    assert lines[-2].startswith("FAIL: 1 failed") and lines[-1] == f"HTML report: {tmp_path / 'r' / 'report.html'}"
    written = {p.name for p in (tmp_path / "r").iterdir()}
    assert written == {"report.json", "report.md", "junit.xml", "report.html", ".mpk-output.json"}


def test_misspelt_budget_key_exit_2_with_path(tmp_path: Path) -> None:
    bad = tmp_path / "devices.yaml"
    bad.write_text(DEVICES_YAML + "  - {device: pixel-7, p90ms: 15}\n")
    doc = write(tmp_path / "results.json", results([cell("pixel-7", "onnx-fp32", samples(9, 50, 2))]))
    code, out = gate(str(doc), "--budgets", str(bad))
    assert code == 2 and "budgets[0].p90ms" in out and "did you mean 'p90_ms'" in out


def test_bad_inputs_are_usage_errors(tmp_path: Path, budgets: Path) -> None:
    assert gate(str(tmp_path / "missing.json"), "--budgets", str(budgets))[0] == 2
    assert gate(str(write(tmp_path / "x.json", {"schema_version": "nope"})), "--budgets", str(budgets))[0] == 2
    ok = write(tmp_path / "results.json", results([cell("pixel-7", "onnx-fp32", samples(9, 50, 2))]))
    assert gate(str(ok))[0] == 2  # nothing to gate against
    assert gate(str(ok), "--baseline", str(ok), "--history", "--budgets", str(budgets))[0] == 2


def test_inconclusive_exit_3_then_until_conclusive_reaches_a_verdict(tmp_path: Path) -> None:
    """The re-measurement is a deterministic noisy fake: no phone exists here (same distribution each round)."""
    import numpy as np

    rng = np.random.default_rng(7)

    def noisy(n: int) -> list[float]:
        return [round(float(v), 3) for v in rng.normal(20.0, 3.0, size=n)]  # true p90 = 23.84 ms

    budget = tmp_path / "devices.yaml"
    budget.write_text(DEVICES_YAML + "  - {device: pixel-7, p90_ms: 24.0}\n")
    path = write(tmp_path / "results.json", results([cell("pixel-7", "onnx-fp32", noisy(40))]))
    code, out = gate(str(path), "--budgets", str(budget))
    assert code == 3 and "INCONCLUSIVE" in out and "straddles budget 24.00 ms" in out

    calls: list[int] = []

    def measure(c: dict, iterations: int) -> dict:
        calls.append(iterations)
        assert (c["device_id"], c["artifact_id"]) == ("pixel-7", "onnx-fp32")
        return {"id": "onnx-fp32", "status": "ok", "samples_ms": noisy(iterations)}

    config = GateConfig(path, budgets=budget, until_conclusive=True, max_rounds=10, time_cap_s=60)
    outcome = run_gate(config, measure=measure)
    assert outcome.exit_code == 0, outcome.summary
    (check,) = outcome.checks
    assert check.interval[1] <= 24.0 and check.extra["n"] == 40 + sum(calls)
    assert calls[:2] == [40, 80]  # each round doubles the samples


def test_until_conclusive_respects_round_cap(tmp_path: Path) -> None:
    """Fake measurement (no phone): samples that never settle stay inconclusive after max_rounds."""
    budget = tmp_path / "devices.yaml"
    budget.write_text(DEVICES_YAML + "  - {device: pixel-7, p50_ms: 20}\n")
    lat = [19.0, 21.0] * 10
    path = write(tmp_path / "results.json", results([cell("pixel-7", "onnx-fp32", lat)]))
    outcome = run_gate(
        GateConfig(path, budgets=budget, until_conclusive=True, max_rounds=2),
        measure=lambda c, n: {"id": "onnx-fp32", "samples_ms": [19.0, 21.0] * (n // 2)},
    )
    assert outcome.exit_code == 3 and outcome.checks[0].extra["n"] == 80


def test_history_records_accepts_and_detects_regression(tmp_path: Path, budgets: Path) -> None:
    db = f"sqlite:///{tmp_path / 'h.sqlite'}"
    first = write(
        tmp_path / "r1.json",
        results([cell("pixel-7", "onnx-int8", samples(10, 300, 1))], run_id="r1", created="2026-01-01T00:00:00Z"),
    )
    code, out = gate(str(first), "--budgets", str(budgets), "--history", "--db", db)
    assert code == 0 and "recorded run #1 (accepted)" in out and "no real-device baseline" in out
    slow = write(
        tmp_path / "r2.json",
        results(
            [cell("pixel-7", "onnx-int8", samples(11.2, 300, 2))],
            run_id="r2",
            git="def5678",
            created="2026-01-02T00:00:00Z",
        ),
    )
    code, out = gate(str(slow), "--budgets", str(budgets), "--history", "--db", db, "--report", str(tmp_path / "rep"))
    assert code == 1 and "regression: median" in out and "Mann-Whitney p=" in out and "(not accepted)" in out
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<polyline" in html and "history trend" in html  # the trend plot appears once history exists
    # an emulated run on the same listed device is never compared with the real history
    emu = write(
        tmp_path / "r3.json",
        results(
            [cell("pixel-7", "onnx-int8", samples(40, 300, 3), emulated=True)],
            run_id="r3",
            created="2026-01-03T00:00:00Z",
        ),
    )
    code, out = gate(str(emu), "--history", "--db", db)
    # nothing to compare it with: nothing gated is never a pass; it is still recorded (and accepted: the
    # first run of its kind is what later runs are compared with)
    assert code == 3 and "no emulated baseline" in out and "nothing was gated" in out
    assert "recorded run #3 (accepted)" in out

    r = CliRunner().invoke(main, ["history", "--device", "pixel-7", "--artifact", "onnx-int8", "--db", db, "--real"])
    assert r.exit_code == 0, r.output
    rows = r.output.strip().splitlines()
    assert rows[0].startswith("date (UTC)") and len(rows) == 3
    assert "abc1234" in rows[1] and " yes " in rows[1] and "def5678" in rows[2] and " no " in rows[2]


def test_report_command_writes_all_four(tmp_path: Path, budgets: Path) -> None:
    doc = write(tmp_path / "results.json", results([cell("pixel-7", "onnx-int8", samples(20, 50, 1))]))
    r = CliRunner().invoke(main, ["report", str(doc), "--out", str(tmp_path / "rep"), "--budgets", str(budgets)])
    assert r.exit_code == 0, r.output  # a report is written whatever the verdict
    assert "html: " in r.output and (tmp_path / "rep" / "report.html").stat().st_size > 1000


@pytest.mark.parametrize("cmd", ["gate", "history", "report"])
def test_help(cmd: str) -> None:
    r = CliRunner().invoke(main, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output
