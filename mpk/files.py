"""File facts both halves need, defined once: content hashes and installed package versions.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
>>> _ = p.write_bytes(b"abc")
>>> sha256_file(p)[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a 100 MB artifact never sits in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """:func:`sha256_file`, or for a directory (an ``.mlpackage``) the sha256 over its sorted relative paths
    and each file's sha256: the same tree gives the same hash wherever it lies."""
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(f)))
    return h.hexdigest()


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (read from its metadata, nothing imported); None if absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
