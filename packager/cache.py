"""Content-addressed cache of exported artifacts, fp32 references and trained built-ins.

Lives in ``$MPK_CACHE_DIR`` (default ``~/.cache/mpk``). An artifact's key is the
sha256 of everything that can change its bytes: model hash, backend, scheme,
calibration data hash, the recipe fields the exporter reads, library versions
and the mpk version. A hit copies the files instead of exporting (minutes ->
a second). Entries are written into a temp dir and renamed, so a crash never
leaves a half entry that a later run would trust.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mpk import __version__
from packager.types import ExportedArtifact, TensorSpec

#: libraries whose version changes what an exporter writes
LIBRARIES = ("torch", "executorch", "torchao", "onnx", "onnxruntime", "onnxscript", "coremltools", "numpy")


#: errno values that mean "no space" (EFBIG: a file-size limit, as set by ulimit -f)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def cache_dir() -> Path:
    return Path(os.environ.get("MPK_CACHE_DIR") or Path.home() / ".cache" / "mpk")


def library_versions() -> dict[str, str | None]:
    """Installed versions without importing the libraries (keeps ``mpk --help`` light)."""
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def hash_arrays(samples: list[tuple[np.ndarray, ...]]) -> str:
    """sha256 over sample arrays (dtype, shape, bytes); identical data -> identical key."""
    h = hashlib.sha256()
    for sample in samples:
        for a in sample:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


@functools.cache
def exporter_code_hash() -> str:
    """sha256 of the exporter sources: a change in how an artifact is made (a quantizer fix, say) must not be
    answered with an artifact the old code made, even though mpk's version number did not move."""
    h = hashlib.sha256()
    for path in sorted((Path(__file__).parent / "export").glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def make_key(**fields: Any) -> str:
    """sha256 of the canonical JSON of ``fields`` plus library versions, mpk version and exporter code."""
    payload = {"fields": fields, "libraries": library_versions(), "mpk": __version__, "code": exporter_code_hash()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _spec_to_dict(s: TensorSpec) -> dict[str, Any]:
    return s.to_dict()


def _spec_from_dict(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"], {k: tuple(v) for k, v in d.get("dynamic", {}).items()})


class ArtifactCache:
    """``get(key, out_dir)`` -> ExportedArtifact copied into out_dir, or None; ``put(key, artifact, meta)``."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = (root or cache_dir()) / "artifacts"
        self.enabled = enabled

    def get(self, key: str, out_dir: Path) -> tuple[ExportedArtifact, dict[str, Any]] | None:
        entry = self.root / key
        meta_path = entry / "meta.json"
        if not self.enabled or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            a = meta["artifact"]
            out_dir.mkdir(parents=True, exist_ok=True)
            profiling = a.get("profiling_files") or {}
            names = [a["path"], *a["extra_files"], *profiling.values()]
            for name in names:
                src, dst = entry / "files" / name, out_dir / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst)
                else:
                    shutil.copy2(src, dst)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise  # copying into the package failed for lack of space: not a cache problem
            return None  # a damaged entry is a miss, not an error: we re-export
        except (KeyError, ValueError):
            return None
        art = ExportedArtifact(
            backend=a["backend"],
            scheme=a["scheme"],
            path=out_dir / a["path"],
            extra_files=[out_dir / p for p in a["extra_files"]],
            inputs=[_spec_from_dict(d) for d in a["inputs"]],
            outputs=[_spec_from_dict(d) for d in a["outputs"]],
            delegation=a["delegation"],
            op_summary=a["op_summary"],
            details=a["details"],
            profiling_files={k: out_dir / p for k, p in profiling.items()},
        )
        return art, meta.get("extra", {})

    def put(self, key: str, artifact: ExportedArtifact, base: Path, extra: dict[str, Any] | None = None) -> None:
        """Store ``artifact`` (paths relative to ``base``). Failures are ignored: a cache is an optimisation."""
        if not self.enabled:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            kinds = list(artifact.profiling_files)
            files = [artifact.path, *artifact.extra_files, *artifact.profiling_files.values()]
            rel = [p.relative_to(base).as_posix() for p in files]
            for p, r in zip(files, rel, strict=True):
                dst = tmp / "files" / r
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(p, dst) if p.is_dir() else shutil.copy2(p, dst)
            d = asdict(artifact)
            d.update(
                path=rel[0],
                extra_files=rel[1 : len(rel) - len(kinds)],
                profiling_files=dict(zip(kinds, rel[len(rel) - len(kinds) :], strict=True)),
                inputs=[_spec_to_dict(s) for s in artifact.inputs],
                outputs=[_spec_to_dict(s) for s in artifact.outputs],
            )
            (tmp / "meta.json").write_text(json.dumps({"artifact": d, "extra": extra or {}}, default=str))
            final = self.root / key
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True) if "tmp" in locals() else None


def cached_arrays(name: str, key: str) -> dict[str, np.ndarray] | None:
    """A small npz cache (fp32 reference outputs). None on miss or damage."""
    path = cache_dir() / name / f"{key}.npz"
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def store_arrays(name: str, key: str, arrays: dict[str, np.ndarray]) -> None:
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, folder / f"{key}.npz")
    except OSError:
        pass
