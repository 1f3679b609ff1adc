"""The package manifest (``mpk.manifest/1``): build, validate against its JSON Schema, write, read.

The manifest is the one contract between packaging and benchmarking: backend,
scheme and IO live here, never in file names. It is validated before it is
written, so a manifest on disk is always schema-valid.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import SchemaError, UsageError

SCHEMA_VERSION = "mpk.manifest/1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"


@functools.cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validation_problems(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation as ``path.to.field: message``; empty when valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    out = []
    for err in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path).replace(".[", "[")
        out.append(f"{where or '(top)'}: {err.message}")
    return out


def validate(manifest: dict[str, Any]) -> None:
    problems = validation_problems(manifest)
    if problems:
        raise SchemaError("manifest fails its schema: " + "; ".join(problems[:10]))


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory (sorted relative paths + contents, e.g. an .mlpackage)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def size_path(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def compressed_size(path: Path) -> int:
    """Bytes after zstd level 19 (what an app download costs), over all files of a directory."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=19, threads=-1)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    total = 0
    for f in files:
        total += len(cctx.compress(f.read_bytes()))
    return total


def git_revision(cwd: Path | None = None) -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    rev = r.stdout.strip()
    return rev if r.returncode == 0 and len(rev) == 40 else None


def environment() -> dict[str, Any]:
    from mpk.hostcpu import describe
    from packager.cache import library_versions

    return {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "libraries": library_versions(),
        "git_revision": git_revision(),
        "cpu": describe(),
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_reference(
    path: Path,
    input_names: list[str],
    output_names: list[str],
    inputs: list[tuple[np.ndarray, ...]],
    outputs: list[np.ndarray],
    labels: np.ndarray | None,
    n: int,
) -> int:
    """reference.npz: ``input:<name>`` and ``output:<name>`` shaped (N, 1, ...), plus ``labels``. Returns N."""
    n = min(n, len(inputs))
    arrays: dict[str, np.ndarray] = {}
    for i, name in enumerate(input_names):
        arrays[f"input:{name}"] = np.stack([s[i] for s in inputs[:n]])
    for name, out in zip(output_names, outputs, strict=True):
        arrays[f"output:{name}"] = np.asarray(out[:n])
    if labels is not None:
        arrays["labels"] = np.asarray(labels[:n])
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return n


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    validate(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and validate; a bad file is a UsageError naming what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"manifest not found: {path}") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read manifest {path}: {e}") from None
    problems = validation_problems(data) if isinstance(data, dict) else ["not a JSON object"]
    if problems:
        raise UsageError(f"{path} is not a valid mpk manifest: " + "; ".join(problems[:5]))
    return data
