"""Runner spec/result and results.json validation: a bad field is named by its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mpk.contract import (
    Outcome,
    cell_key,
    iter_cells,
    problems,
    read_results,
    read_spec,
    validate_result,
    validate_results,
    write_results,
)
from mpk.errors import SchemaError, UsageError
from runners.host_runner import accuracy_metrics
from runners.stats import LatencyStats

SPEC = {
    "schema_version": "mpk.runner-spec/1", "run_id": "r1", "device_id": "host",
    "settings": {"threads": 1, "warmup_iterations": 1, "min_iterations": 2, "min_seconds": 0},
    "artifacts": [{"id": "a", "backend": "onnx", "scheme": "fp32", "path": "a.onnx", "sha256": "0" * 64}],
}  # fmt: skip
FACTS = {"model": "m", "os": "linux", "abi": "x86_64", "cores": 2}


def _result() -> dict:
    samples = [1.0, 2.0, 3.0]
    art = {"id": "a", "backend": "onnx", "scheme": "fp32", "status": "ok", "error": None, "samples_ms": samples,
           "iterations": 3, "stats": LatencyStats.from_samples(samples).to_dict()}  # fmt: skip
    return {"schema_version": "mpk.runner-result/1", "run_id": "r1", "device_id": "host",
            "runner": {"name": "host", "version": "0.1.0"}, "emulated": False, "device": dict(FACTS),
            "settings": SPEC["settings"], "started_utc": "t0", "finished_utc": "t1", "artifacts": [art]}  # fmt: skip


def _results() -> dict:
    r = _result()
    cell = {"device_id": "host", "ran_on": "host", "emulated": False, "artifact_id": "a", "backend": "onnx",
            "scheme": "fp32", "status": "ok", "outcome": "ok", "error": None, "device": r["device"],
            "settings": r["settings"], "runner": r["runner"], "result": r["artifacts"][0]}  # fmt: skip
    return {"schema_version": "mpk.results/2", "run_id": "x", "created_utc": "t", "devices_file": None,
            "manifest": {"path": "m.json", "sha256": "a" * 64, "model": {}}, "config": {},
            "environment": {"mpk_version": "0.1.0", "python": "3", "platform": "p", "git_revision": None,
                            "libraries": {}}, "matrix": {"devices": ["host"], "artifacts": ["a"]},
            "cells": [cell]}  # fmt: skip


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    bad = copy.deepcopy(SPEC)
    bad["artifacts"][0]["sha256"] = "xyz"
    bad["settings"]["threads"] = 0
    del bad["run_id"]
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(SchemaError) as ei:
        read_spec(p)
    msg = ei.value.message
    assert "artifacts[0].sha256: 'xyz' does not match" in msg
    assert "settings.threads: 0 is less than the minimum of 1" in msg
    assert "<root>: 'run_id' is a required property" in msg
    p.write_text(json.dumps(SPEC))
    assert read_spec(p)["run_id"] == "r1"


def test_result_errors_name_the_field() -> None:
    r = _result()
    validate_result(r)
    r["artifacts"][0]["error"] = {"kind": "segfault", "message": "x"}
    r["device"]["cores"] = "two"
    found = problems(r, "runner_result")
    assert any(p.startswith("artifacts[0].error.kind:") for p in found)
    assert any(p.startswith("device.cores:") for p in found)


def test_results_roundtrip_and_helpers(tmp_path: Path) -> None:
    doc = _results()
    path = write_results(tmp_path / "out" / "results.json", doc)
    assert read_results(path) == doc
    assert [cell_key(c) for c in iter_cells(doc, outcome=Outcome.OK)] == [("host", "a")]
    assert list(iter_cells(doc, outcome=Outcome.FAILED)) == []
    doc["cells"][0]["outcome"] = "fine"
    with pytest.raises(UsageError, match=r"cells\[0\]\.outcome: 'fine' is not one of"):
        validate_results(doc)
    with pytest.raises(SchemaError):  # an invalid doc is never written over a valid one
        write_results(path, doc)
    assert read_results(path)["cells"][0]["outcome"] == "ok"


def test_version_1_results_are_read_and_upgraded(tmp_path: Path) -> None:
    """A file written before results/2 still gates: its outcome comes from status and the typed error kind,
    and (version 1 only) a skipped cell whose reason begins 'not applicable:'."""
    v1 = _results()
    v1["schema_version"] = "mpk.results/1"
    del v1["matrix"]
    ok = v1["cells"][0]
    del ok["outcome"]
    na = {**copy.deepcopy(ok), "artifact_id": "c", "backend": "coreml", "status": "skipped", "ran_on": None,
          "error": "not applicable: the host runner cannot run coreml artifacts here", "result": None}  # fmt: skip
    absent = {**copy.deepcopy(na), "artifact_id": "d", "error": "device absent"}
    unsupported = copy.deepcopy(ok)
    unsupported.update(artifact_id="u", status="error", error="unsupported: needs macOS")
    unsupported["result"] = {"id": "u", "backend": "onnx", "scheme": "fp32", "status": "error",
                             "error": {"kind": "unsupported", "message": "needs macOS"}}  # fmt: skip
    dead = {**copy.deepcopy(na), "artifact_id": "e", "status": "error", "ran_on": "host", "error": "adb offline"}
    v1["cells"] = [ok, na, absent, unsupported, dead]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(v1))
    doc = read_results(path)
    assert doc["schema_version"] == "mpk.results/2" and doc["upgraded_from"] == "mpk.results/1"
    assert doc["matrix"] is None
    assert [c["outcome"] for c in doc["cells"]] == ["ok", "not_applicable", "skipped", "unsupported", "infra_error"]
    assert json.loads(path.read_text()) == v1  # reading never rewrites the user's file


def test_accuracy_metrics() -> None:
    ref = [[np.array([[0.1, 0.9, 0.0]])], [np.array([[0.8, 0.1, 0.1]])]]
    same = accuracy_metrics(ref, ref, task="classification")
    assert same == {"samples": 2, "max_abs_error": 0.0, "cosine": 1.0, "snr_db": 200.0, "top1_agreement": 1.0,
                    "top1_counted": 2}  # fmt: skip
    flipped = [[np.array([[0.1, 0.9, 0.0]])], [np.array([[0.1, 0.8, 0.1]])]]
    m = accuracy_metrics(flipped, ref)
    assert m["top1_agreement"] == 0.5 and m["max_abs_error"] == pytest.approx(0.7) and m["cosine"] < 1.0
    assert accuracy_metrics(ref, ref, task="other")["top1_agreement"] is None


def test_cli_help_and_devices_command(repo_root: Path, tmp_path: Path) -> None:
    from mpk.cli import main

    runner = CliRunner()
    for cmd in ("bench", "devices"):
        r = runner.invoke(main, [cmd, "--help"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["devices", "--devices", str(repo_root / "devices.yaml"), "--no-probe"])
    assert r.exit_code == 0, r.output
    assert "pixel-7" in r.output and "virtual-android" in r.output
    bad = tmp_path / "d.yaml"
    bad.write_text("version: 1\ndevices:\n  - {id: h, kind: hots, threads: 0}\n")
    r = runner.invoke(main, ["devices", "--devices", str(bad)])
    assert r.exit_code == 2
    assert "devices[0].kind: unknown device kind 'hots'" in r.output
    assert "devices[0].threads: expected an integer >= 1, got 0" in r.output


def test_parse_result_is_the_file_reader_for_text() -> None:
    from mpk.contract import parse_result

    r = _result()
    assert parse_result(json.dumps(r)) == r
    with pytest.raises(SchemaError, match="is not JSON") as e:
        parse_result("Segmentation fault", what="result from pixel-7")
    assert e.value.exit_code == 4  # a runner's output, not the user's file
