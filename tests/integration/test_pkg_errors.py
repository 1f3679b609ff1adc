"""Bad input to `mpk package` gets one error line and its documented exit code: no traceback, and no
library log (torch logs a 15-line traceback of its own when a .pt2 does not load). Each case runs
`mpk` in a fresh process, as a user would, so logging is configured exactly as on a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mpk.errors import EXIT_MODEL, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]

FACTORY = """
import torch
def make():
    return torch.nn.Linear(4, 2), (torch.zeros(1, 4),)
"""


def mpk(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TORCH_LOGS", None)
    cmd = [sys.executable, "-m", "mpk", "package", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def assert_one_error(r: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert r.returncode == code, r.stderr
    assert len(errors) == 1 and says in errors[0], r.stderr
    # besides the error (and its hint), only mpk's own progress lines: no traceback, no library log
    other = [ln for ln in lines if not ln.startswith(("error: ", "  hint: ", "✓ "))]
    assert other == [], other
    assert "Traceback" not in r.stderr + r.stdout


def test_corrupt_pt2_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "model.pt2"
    f.write_bytes(os.urandom(4096))
    assert_one_error(mpk("--model", str(f), "--out", str(tmp_path / "o")), EXIT_USAGE, "not a torch.export archive")


def test_truncated_pt2_is_a_usage_error(tmp_path: Path) -> None:
    import torch

    f = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),)), str(f))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert_one_error(mpk("--model", str(f), "--out", str(tmp_path / "o")), EXIT_USAGE, "not a torch.export archive")


@pytest.fixture
def zip_not_pt2(tmp_path: Path) -> Path:
    """A well-formed zip that torch.export.load cannot read: torch logs a traceback before it raises."""
    f = tmp_path / "notes.pt2"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("notes.txt", "not a model")
    return f


def test_zip_that_is_not_a_program_is_a_model_error_without_torch_log(zip_not_pt2: Path, tmp_path: Path) -> None:
    r = mpk("--model", str(zip_not_pt2), "--out", str(tmp_path / "o"))
    assert_one_error(r, EXIT_MODEL, "torch.export.load failed")


def test_verbose_lets_the_library_log_through(zip_not_pt2: Path, tmp_path: Path) -> None:
    r = mpk("--model", str(zip_not_pt2), "--out", str(tmp_path / "o"), "--verbose")
    assert r.returncode == EXIT_MODEL
    assert "Ran into the following error when deserializing" in r.stderr  # torch's own log record
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")] != []


def test_binary_recipe_is_a_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "recipe.yaml"
    f.write_bytes(bytes(range(256)) * 4)
    assert_one_error(mpk("--recipe", str(f)), EXIT_USAGE, "not UTF-8 text")


def test_model_file_that_raises_on_import_is_a_model_error(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import torch\nraise RuntimeError('checkpoint is corrupt')\n")
    r = mpk("--model", f"{f}:make", "--out", str(tmp_path / "o"))
    assert_one_error(r, EXIT_MODEL, "importing the file raised RuntimeError: checkpoint is corrupt")


def test_binary_model_file_is_a_model_error(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_bytes(os.urandom(2048))
    assert_one_error(mpk("--model", f"{f}:make", "--out", str(tmp_path / "o")), EXIT_MODEL, "importing the file")


def test_missing_factory_names_the_ones_there(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(FACTORY)
    r = mpk("--model", f"{f}:build", "--out", str(tmp_path / "o"))
    assert_one_error(r, EXIT_USAGE, f"{f}: unknown factory 'build'")
    assert "known: make" in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_py_file_without_its_factory_is_one_line_naming_the_form(tmp_path: Path) -> None:
    """``--model model.py`` (no ``:factory``) was reported as an unknown built-in model."""
    src = tmp_path / "model.py"
    src.write_text(FACTORY)
    assert_one_error(mpk("--model", str(src), "--out", str(tmp_path / "o")), EXIT_USAGE, f"{src}:FUNCTION")
    missing = tmp_path / "missing.py"
    assert_one_error(mpk("--model", str(missing), "--out", str(tmp_path / "o")), EXIT_USAGE, "no such file")


def test_a_calibration_file_that_is_not_an_npz_is_one_line(tmp_path: Path) -> None:
    """A text file passed as .npz: numpy's own message talked about pickled data."""
    bad = tmp_path / "calib.npz"
    bad.write_text("not numbers\n")
    r = mpk("--model", "digits-cnn", "--calibration", str(bad), "--out", str(tmp_path / "o"))
    assert_one_error(r, EXIT_USAGE, "not an .npz archive")
    assert not (tmp_path / "o").exists()
