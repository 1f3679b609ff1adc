"""The software side of a results file's self-description: mpk and library versions, Python, git revision.

Read without importing the libraries (``importlib.metadata``), so describing a run costs nothing.
The device side is :mod:`runners.devicefacts`.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_LIBRARIES = ("torch", "executorch", "onnxruntime", "onnx", "coremltools", "torchao", "numpy", "adb-shell")


def environment() -> dict[str, Any]:
    """The ``environment`` object of a results file (library versions without importing them)."""
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
