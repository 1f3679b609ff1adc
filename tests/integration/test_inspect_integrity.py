"""``mpk inspect PKG`` checks every file against the manifest before it says anything about the package."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mpk.cli import main
from tests.integration.bench_helpers import tiny_package


def inspect(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["inspect", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.output


def test_deleted_or_tampered_artifact_fails_inspect(tmp_path: Path) -> None:
    manifest = tiny_package(tmp_path / "pkg")
    pkg = manifest.parent
    code, out = inspect(str(pkg))
    assert code == 0, out
    assert "NOT AS PACKAGED" not in out

    data = bytearray((pkg / "tiny-fp32.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    (pkg / "tiny-fp32.onnx").write_bytes(bytes(data))
    code, out = inspect(str(pkg))
    assert code == 1 and "NOT AS PACKAGED" in out
    assert "tiny-fp32.onnx does not match its sha256 in the manifest" in out

    (pkg / "tiny-fp32.pte").unlink()
    code, out = inspect(str(pkg), "--json")
    assert code == 1
    doc = json.loads(out[: out.rindex("}") + 1])
    assert doc["file_check"]["ok"] is False
    assert doc["file_check"]["problems"]["executorch-fp32"] == ["tiny-fp32.pte is missing"]
    assert "2 file(s) of" in out and "do not match the manifest" in out

    (pkg / "reference.npz").write_bytes(b"short")
    code, out = inspect(str(manifest))
    assert code == 1 and "reference: reference.npz does not match its sha256" in out


def test_a_manifest_that_is_not_json_is_one_line_exit_2(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    code, out = inspect(str(pkg))
    assert code == 2 and out.count("\n") == 1 and "not UTF-8 text" in out
