"""results.json (``mpk.results/1``): write atomically, load with validation, walk the cells.

The gate, the reports and the history all read this file, so it is validated
on the way out and on the way in. It is rewritten after every cell (temp file
+ rename), so an interrupted ``mpk bench`` still leaves a valid file holding
what finished, with ``complete: false``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mpk.errors import OutputNotWritable
from runners.contract import read_json, validate

SCHEMA_VERSION = "mpk.results/1"
_LIBRARIES = ("torch", "executorch", "onnxruntime", "onnx", "coremltools", "torchao", "numpy", "adb-shell")


def environment() -> dict[str, Any]:
    """Self-description of the machine that ran ``mpk bench`` (library versions without importing them)."""
    from mpk import __version__

    libs = {}
    for dist in _LIBRARIES:
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {
        "mpk_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_revision": git_revision(),
        "libraries": libs,
    }


def git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def validate_results(doc: Any, *, what: str = "results") -> dict[str, Any]:
    """Raise SchemaError naming the bad field's path (``cells[3].status: 'fine' is not one of ...``)."""
    validate(doc, "results", what=what)
    return doc


def write_results(path: Path, doc: dict[str, Any]) -> Path:
    """Validate, then write atomically: readers never see a half-written file."""
    validate_results(doc, what="results to write")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False))
        os.replace(tmp, path)
    except OSError as e:
        raise OutputNotWritable(f"cannot write {path}: {e}") from e
    return path


def load_results(path: Path) -> dict[str, Any]:
    return validate_results(read_json(Path(path), what="results file"), what=f"results file {path}")


def iter_cells(results: dict[str, Any], *, status: str | None = None) -> Iterator[dict[str, Any]]:
    """Every cell, optionally only those with ``status`` ('ok', 'error', 'skipped')."""
    for cell in results.get("cells", []):
        if status is None or cell["status"] == status:
            yield cell


def cell_key(cell: dict[str, Any]) -> tuple[str, str]:
    """(device_id as listed in devices.yaml, artifact_id): the identity the gate and history compare by."""
    return (cell["device_id"], cell["artifact_id"])
