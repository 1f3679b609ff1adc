"""Backend capabilities, scheme resolution, the exporter registry and the light runtime/inspect front doors.

Nothing here exports a model; these must stay fast and must not import torch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mpk.errors import UnknownNameError, UsageError
from packager.export import EXPORTERS
from packager.export.capabilities import (
    BACKENDS,
    all_combinations,
    check_combination,
    resolve_scheme,
    schemes,
)


@pytest.mark.parametrize("backend", ["executorch", "onnx", "coreml"])
def test_none_means_fp32_everywhere(backend: str) -> None:
    assert resolve_scheme(backend, "none") == "fp32"
    assert resolve_scheme(backend, " INT8 ") == "int8"


def test_impossible_combination_lists_what_the_backend_can_do() -> None:
    with pytest.raises(UsageError) as ei:
        check_combination("coreml", "int8-dynamic")
    msg = ei.value.format_message()
    assert "backend 'coreml' has no scheme 'int8-dynamic'" in msg
    assert "fp32, fp16, int8, palettize4, palettize6, palettize8" in msg
    assert "available on: executorch, onnx" in msg
    assert ei.value.exit_code == 2
    with pytest.raises(UsageError) as ei:
        resolve_scheme("onnx", "fp23")
    assert "hint: did you mean 'fp32'?" in ei.value.format_message()


def test_unknown_backend_suggests_nearest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'onnx'"):
        check_combination("onxx", "fp32")
    with pytest.raises(UnknownNameError, match="did you mean 'coreml'"):
        EXPORTERS.get("coremel")


def test_capabilities_are_complete_data() -> None:
    assert schemes("executorch") == ["fp32", "int8", "int8-dynamic"]
    assert schemes("onnx") == ["fp32", "int8", "int8-dynamic"]
    assert schemes("coreml") == ["fp32", "fp16", "int8", "palettize4", "palettize6", "palettize8"]
    assert BACKENDS["coreml"].run_os == "darwin" and not BACKENDS["coreml"].can_run_on("linux")
    assert BACKENDS["onnx"].can_run_on("linux")
    assert {b: c.suffix for b, c in BACKENDS.items()} == {
        "executorch": ".pte",
        "onnx": ".onnx",
        "coreml": ".mlpackage",
    }
    assert BACKENDS["executorch"].needs_calibration == {"int8"}
    assert len(all_combinations()) == 12
    assert sorted(EXPORTERS.names()) == sorted(BACKENDS)
    assert all(desc for c in BACKENDS.values() for desc in c.schemes.values())


def test_light_modules_do_not_import_torch(repo_root: Path) -> None:
    code = (
        "import sys, packager.export, packager.export.capabilities, packager.runtime, packager.inspect_artifact;"
        "bad = [m for m in ('torch', 'executorch', 'coremltools', 'onnxruntime') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True)


def test_open_session_refuses_bad_requests(tmp_path: Path) -> None:
    from packager.runtime import backend_for_path, open_session

    with pytest.raises(UnknownNameError, match="did you mean 'onnx'"):
        open_session("onnxx", tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="no such artifact"):
        open_session("onnx", tmp_path / "missing.onnx")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(UsageError, match="threads must be >= 1"):
        open_session("onnx", tmp_path / "m.onnx", threads=0)
    assert backend_for_path(Path("a/b/model-int8.pte")) == "executorch"
    assert backend_for_path(Path("m.mlpackage")) == "coreml"


def test_inspect_refuses_unknown_and_mislabelled_files(tmp_path: Path) -> None:
    from packager.inspect_artifact import inspect_artifact

    weird = tmp_path / "model.tflite"
    weird.write_bytes(b"TFL3")
    with pytest.raises(UsageError, match=r"unknown artifact type \(expected one of .pte, .onnx, .mlpackage\)"):
        inspect_artifact(weird)
    fake_pte = tmp_path / "model.pte"
    fake_pte.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(UsageError, match="not an ExecuTorch program"):
        inspect_artifact(fake_pte)
    with pytest.raises(UsageError, match="no such file"):
        inspect_artifact(tmp_path / "absent.onnx")
