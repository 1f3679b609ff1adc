"""What the gate refuses: results that contradict themselves, runs that did not finish, budgets that gate nothing.

Each case edits a schema-valid results file the way a hurried engineer (or a broken runner) would, and
runs the real ``mpk gate`` on it through the CLI. The files are generated from seeded samples in the
bench's real format, because a phone cannot exist here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpk.cli import main
from runners.stats import LatencyStats
from tests.gate_factory import DEVICES_YAML, cell, results, samples


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def gate(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["gate", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    return r.exit_code, r.output


@pytest.fixture
def budgets(tmp_path: Path) -> Path:
    p = tmp_path / "devices.yaml"
    p.write_text(DEVICES_YAML + "  - {device: '*', artifact: '*', emulated: any, p90_ms: 500}\n")
    return p


def good() -> dict:
    """Two devices x two artifacts, one of them emulated (the virtual device standing in for pixel-7)."""
    return results(
        [
            cell("host", "onnx-fp32", samples(10, 60, 1)),
            cell("host", "onnx-int8", samples(8, 60, 2)),
            cell("pixel-7", "onnx-fp32", samples(12, 60, 3), emulated=True, ran_on="virtual-android"),
            cell("pixel-7", "onnx-int8", samples(9, 60, 4), emulated=True, ran_on="virtual-android"),
        ]
    )


def test_the_untouched_file_passes(tmp_path: Path, budgets: Path) -> None:
    code, out = gate(str(write(tmp_path / "r.json", good())), "--budgets", str(budgets))
    assert code == 0 and "PASS: 4 passed" in out


def _edited(edit) -> dict:
    doc = good()
    edit(doc)
    return doc


def _set_samples(c: dict, values: list) -> None:
    c["result"]["samples_ms"] = values
    c["result"]["iterations"] = len(values)


EDITS = {
    "relabelled as a real device": (
        lambda d: d["cells"][2].update(emulated=False),
        "cells[2] (pixel-7/onnx-fp32): ran on 'virtual-android', standing in for 'pixel-7', but says emulated: false",
    ),
    "relabelled, ran_on too": (
        lambda d: (
            d["cells"][2].update(emulated=False, ran_on="pixel-7"),
            d["cells"][2]["device"].update(model="mpk Virtual Device"),
        ),
        "its device facts are mpk's virtual device",
    ),
    "stats edited": (
        lambda d: d["cells"][0]["result"]["stats"].update(p90_ms=1.0),
        "cells[0] (host/onnx-fp32): stats.p90_ms is 1.0 but the samples give",
    ),
    "samples dropped, stats kept": (
        lambda d: _set_samples(d["cells"][0], []),
        "stats are given without the samples_ms they summarise",
    ),
    "iterations edited": (
        lambda d: d["cells"][1]["result"].update(iterations=500),
        "cells[1] (host/onnx-int8): iterations is 500 but samples_ms holds 60 sample(s)",
    ),
    "a negative sample": (
        lambda d: d["cells"][1]["result"]["samples_ms"].__setitem__(3, -2.0),
        "cells[1] (host/onnx-int8): samples_ms[3] is -2.0: a latency is a finite number >= 0",
    ),
    "a NaN sample": (
        lambda d: d["cells"][1]["result"]["samples_ms"].__setitem__(0, float("nan")),
        "samples_ms[0] is nan",
    ),
    "a cell deleted from a complete run": (
        lambda d: d["cells"].pop(3),
        "complete: true, but 1 planned cell(s) are missing: pixel-7/onnx-int8",
    ),
    "a cell duplicated": (
        lambda d: d["cells"].append(copy.deepcopy(d["cells"][0])),
        "cells[4] (host/onnx-fp32): the same device and artifact as cells[0]",
    ),
    "a cell from another run": (
        lambda d: d["cells"].append(cell("pixel-8", "onnx-fp32", samples(10, 60, 9))),
        "cells[4] (pixel-8/onnx-fp32): not in the run's matrix",
    ),
    "outcome contradicts status": (
        lambda d: d["cells"][0].update(outcome="failed"),
        "status 'ok' contradicts outcome failed",
    ),
    "an ok cell without a result": (
        lambda d: d["cells"][0].update(result=None),
        "outcome ok needs a runner result, but result is null",
    ),
    "accuracy out of range": (
        lambda d: d["cells"][0]["result"]["accuracy"].update(top1_agreement=1.5),
        "accuracy.top1_agreement is 1.5: outside [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_an_inconsistent_file_is_a_usage_error_naming_the_cell(tmp_path: Path, budgets: Path, case: str) -> None:
    edit, expected = EDITS[case]
    code, out = gate(str(write(tmp_path / "r.json", _edited(edit))), "--budgets", str(budgets))
    assert code == 2, out
    assert "is inconsistent" in out and expected in out, out


def test_an_incomplete_run_never_passes(tmp_path: Path, budgets: Path) -> None:
    doc = good()
    doc["complete"] = False
    doc["cells"].pop()
    code, out = gate(str(write(tmp_path / "r.json", doc)), "--budgets", str(budgets))
    assert code == 4 and "ERROR" in out and "complete: false (3 of 4 planned cell(s) present)" in out


def test_a_sample_count_too_small_for_the_ci_is_inconclusive_with_the_minimum(tmp_path: Path, budgets: Path) -> None:
    doc = results([cell("host", "onnx-fp32", [5.0, 5.2, 5.1])])
    code, out = gate(str(write(tmp_path / "r.json", doc)), "--budgets", str(budgets))
    assert code == 3 and "needs at least 36 samples" in out and "from 3 sample(s)" in out


def test_duplicate_budget_key_is_refused(tmp_path: Path) -> None:
    b = tmp_path / "devices.yaml"
    b.write_text(DEVICES_YAML + "  - {device: host, p90_ms: 0.02, p90_ms: 500}\n")
    code, out = gate(str(write(tmp_path / "r.json", good())), "--budgets", str(b))
    assert code == 2 and "duplicate key 'p90_ms'" in out


def test_a_rule_that_names_no_cell_is_refused_unless_allowed(tmp_path: Path) -> None:
    b = tmp_path / "devices.yaml"
    b.write_text(DEVICES_YAML + "  - {device: hots, emulated: any, p90_ms: 500}\n"
                 "  - {device: host, p90_ms: 500}\n")  # fmt: skip
    r = str(write(tmp_path / "r.json", good()))
    code, out = gate(r, "--budgets", str(b))
    assert code == 2 and "budgets[0]" in out and "did you mean 'host'" in out and "--allow-unmatched-budgets" in out
    code, out = gate(r, "--budgets", str(b), "--allow-unmatched-budgets")
    assert code == 0 and "names no cell of this run" in out


def test_a_gate_that_gated_nothing_does_not_exit_0(tmp_path: Path) -> None:
    """Only real-device rules, only emulated cells of that device: nothing applied. That is no pass."""
    b = tmp_path / "devices.yaml"
    b.write_text(DEVICES_YAML + "  - {device: pixel-7, p90_ms: 500}\n")
    doc = results([cell("pixel-7", "onnx-fp32", samples(12, 60, 3), emulated=True, ran_on="virtual-android")])
    code, out = gate(str(write(tmp_path / "r.json", doc)), "--budgets", str(b))
    assert code == 3 and "nothing was gated" in out and "gated nothing" in out


def test_stored_stats_equal_to_recomputed_ones_pass(tmp_path: Path, budgets: Path) -> None:
    """Runners on other platforms round differently: a relative difference of 1e-9 is not an edit."""
    doc = good()
    st = doc["cells"][0]["result"]["stats"]
    fresh = LatencyStats.from_samples(doc["cells"][0]["result"]["samples_ms"]).to_dict()
    st["mean_ms"] = fresh["mean_ms"] * (1 + 1e-9)
    code, _ = gate(str(write(tmp_path / "r.json", doc)), "--budgets", str(budgets))
    assert code == 0
