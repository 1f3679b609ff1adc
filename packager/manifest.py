"""Building the package manifest (``mpk.manifest/1``): hashes, sizes, the environment and reference.npz.

The manifest is the one contract between packaging and benchmarking: backend,
scheme and IO live there, never in file names. Its reader and writer are
:func:`mpk.contract.read_manifest` / :func:`mpk.contract.write_manifest` (schema-checked
both ways); this module computes what goes into it.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# The manifest's one reader and writer live in the contract layer (mpk.contract), shared with the bench
# and the gate; the packager writes through it like everyone else.
from mpk.contract import MANIFEST_VERSION as SCHEMA_VERSION
from mpk.contract import write_manifest
from mpk.files import sha256_path

__all__ = ["SCHEMA_VERSION", "compressed_size", "environment", "file_problems", "sha256_path", "size_path",
           "utc_now", "write_manifest", "write_reference"]  # fmt: skip


def size_path(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def file_problems(manifest: dict[str, Any], manifest_dir: Path) -> dict[str, list[str]]:
    """artifact id -> what no longer matches the manifest: a missing file, another size, another sha256.

    Every artifact and every extra file it lists is checked (size first, then the hash); ``reference``
    is listed under ``"reference"``. Empty when every file is what the manifest says.
    """
    entries: list[tuple[str, dict[str, Any]]] = []
    for a in manifest["artifacts"]:
        entries.append((a["id"], a))
        entries.extend((a["id"], e) for e in a.get("extra_files") or [] if isinstance(e, dict))
        entries.extend((a["id"], e) for e in (a.get("profiling") or {}).values())
    if manifest.get("reference"):
        entries.append(("reference", manifest["reference"]))
    out: dict[str, list[str]] = {}
    for key, e in entries:
        path = manifest_dir / e["path"]
        if not path.exists():
            out.setdefault(key, []).append(f"{e['path']} is missing")
            continue
        size = size_path(path)
        if "size_bytes" in e and size != e["size_bytes"]:
            out.setdefault(key, []).append(f"{e['path']} is {size} bytes, the manifest says {e['size_bytes']}")
        elif sha256_path(path) != e["sha256"]:
            out.setdefault(key, []).append(f"{e['path']} does not match its sha256 in the manifest (changed since)")
    return out


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
