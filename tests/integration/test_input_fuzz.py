"""Arbitrary bytes as every input file of every command: one line, exit 2, never a traceback.

Hypothesis (seeded: ``derandomize``, so CI sees the same cases every run) feeds raw bytes, text, and
JSON and YAML documents of random shape to each file argument mpk reads: the recipe, a manifest,
devices.yaml, results, budgets, a baseline and ``mpk tune --replay``. The other arguments are valid,
so only the fuzzed file can be what is wrong. The commands run in-process through Click, exactly as
``mpk`` runs them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpk.cli import main
from tests.gate_factory import DEVICES_YAML, cell, results, samples
from tests.integration.bench_helpers import tiny_package

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_docs = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)
#: raw bytes (mostly not UTF-8), text, and well-formed JSON / YAML of random shape (they reach the validators)
INPUTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    _docs.map(lambda d: json.dumps(d).encode()),
    _docs.map(lambda d: yaml.safe_dump(d).encode()),
    st.dictionaries(st.sampled_from(["version", "devices", "budgets", "defaults", "schema_version", "cells", "model"]),
                    _docs, max_size=4).map(lambda d: yaml.safe_dump(d).encode()),
)  # fmt: skip
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid companions for the argument under test: a package, devices.yaml with budgets, a results file."""
    d = tmp_path_factory.mktemp("fuzz")
    manifest = tiny_package(d / "pkg")
    devices = d / "devices.yaml"
    devices.write_text(DEVICES_YAML + "  - {device: '*', emulated: any, p90_ms: 500}\n")
    res = d / "results.json"
    res.write_text(json.dumps(results([cell("pixel-7", "onnx-fp32", samples(10, 60, 1))])))
    return {"manifest": manifest, "devices": devices, "results": res, "dir": d}


#: (command, how the fuzzed file is passed) -> argv; ``i`` is the fuzzed file, ``o`` a fresh output folder
COMMANDS = {
    "package --recipe": lambda f, i, o: ["package", "--recipe", i, "--dry-run"],
    "bench MANIFEST": lambda f, i, o: ["bench", i, "--devices", f["devices"], "--out", o],
    "bench --devices": lambda f, i, o: ["bench", f["manifest"], "--devices", i, "--out", o],
    "devices --devices": lambda f, i, o: ["devices", "--devices", i, "--no-probe"],
    "gate RESULTS": lambda f, i, o: ["gate", i, "--budgets", f["devices"]],
    "gate --budgets": lambda f, i, o: ["gate", f["results"], "--budgets", i],
    "gate --baseline": lambda f, i, o: ["gate", f["results"], "--budgets", f["devices"], "--baseline", i],
    "report RESULTS": lambda f, i, o: ["report", i, "--out", o],
    "inspect PKG": lambda f, i, o: ["inspect", str(Path(i).parent)],
    "tune --replay": lambda f, i, o: ["tune", "--replay", i],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_arbitrary_bytes_are_a_usage_error_without_traceback(files: dict[str, Path], command: str) -> None:
    runner = CliRunner()

    @FUZZ
    @given(data=INPUTS)
    def check(data: bytes) -> None:
        work = Path(tempfile.mkdtemp(dir=files["dir"]))
        try:
            target = work / ("manifest.json" if command == "inspect PKG" else "input")
            target.write_bytes(data)
            argv = [str(a) for a in COMMANDS[command](files, str(target), str(work / "out"))]
            r = runner.invoke(main, argv)
            assert isinstance(r.exception, SystemExit), f"{command} {data[:80]!r}: {r.exception!r}\n{r.output}"
            assert r.exit_code == 2, f"{command} {data[:80]!r}: exit {r.exit_code}\n{r.output}"
            assert "Traceback" not in r.output
            assert r.output.startswith(("error:", "Error:", "Usage:")), r.output
            assert not (work / "out").exists(), "a refused input left an output folder behind"
            assert not list(work.glob(".out.*")), "a refused input left a staging folder behind"
        finally:
            shutil.rmtree(work)

    check()


def test_a_corrupt_pt2_is_one_line_without_torchs_traceback(tmp_path: Path) -> None:
    """Not a zip at all: a corrupt input file, exit 2, refused before torch is asked. A zip torch.export cannot
    read: exit 5 (the model cannot be loaded); torch logs its own traceback of it first, which mpk keeps out of
    the way unless ``--verbose``."""
    import os
    import subprocess
    import sys
    import zipfile

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    env.pop("TORCH_LOGS", None)  # mpk leaves a user's own TORCH_LOGS alone, so the test must not bring one

    def run(model: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mpk", "package", "--model", str(model), "--quantize", "none", "--backends",
               "onnx", "--out", str(tmp_path / "out"), *extra]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    garbage = tmp_path / "model.pt2"
    garbage.write_bytes(bytes(range(256)) * 20)
    r = run(garbage)
    assert r.returncode == 2 and "not a torch.export archive" in r.stderr
    assert r.stderr.strip().splitlines()[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr
    bad_zip = tmp_path / "bad.pt2"
    with zipfile.ZipFile(bad_zip, "w") as z:
        z.writestr("model/archive_format", "pt2")
        z.writestr("model/models/model.json", "{not json")
    r = run(bad_zip)
    assert r.returncode == 5 and "torch.export.load failed" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:"), r.stderr
    loud = run(bad_zip, "--verbose")
    assert loud.returncode == 5 and "Traceback" in loud.stderr  # what was kept quiet is torch's, and it exists
