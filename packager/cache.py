"""Content-addressed cache of everything ``mpk package`` can reuse: artifacts, verifications, fp32
references, model facts, zstd sizes and trained built-ins.

Lives in ``$MPK_CACHE_DIR`` (default ``~/.cache/mpk``). Every key is the sha256 of everything that can
change the answer (:func:`make_key`: the fields given, plus library versions, the mpk version and the
exporter code), so a hit is the answer the work would give, not a guess:

=============  ==================================================  ===========================================
what           keyed by                                            trusted because
=============  ==================================================  ===========================================
artifact       model sha256, backend, scheme, calibration hash,    each file's sha256 is stored at ``put`` and
               seed, bias correction, IO specs                     checked on the copy ``get`` hands back
verification   artifact sha256 (as checked), evaluation data and   the artifact bytes, data, reference and
               labels hash, reference hash, tolerances, threads,   tolerances are the whole input of
               verify/export code                                  ``verify_artifact``
reference      model sha256, evaluation data hash                  the arrays' hash is stored and rechecked
model info     built-in name + weights file hash, or .pt2 bytes    :class:`~packager.types.ModelHandle` checks
                                                                   the sha256 if the model is ever loaded
zstd size      artifact sha256                                     a pure function of the bytes
=============  ==================================================  ===========================================

Entries are written into a temp file or dir and renamed, so a crash never leaves a half entry that a later
run would trust. A damaged entry is a miss, never an error. Any write failure is ignored (a cache is an
optimisation) except a full disk while copying into the package, which the caller must see.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mpk import __version__
from packager.types import ExportedArtifact, TensorSpec, hash_samples

#: libraries whose version changes what an exporter writes or a runtime computes
LIBRARIES = ("torch", "executorch", "torchao", "onnx", "onnxruntime", "onnxscript", "coremltools", "numpy")

#: errno values that mean "no space" (EFBIG: a file-size limit, as set by ulimit -f)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: bump when the layout of an artifact entry changes; older entries are then misses
ARTIFACT_FORMAT = 2


def cache_dir() -> Path:
    return Path(os.environ.get("MPK_CACHE_DIR") or Path.home() / ".cache" / "mpk")


@functools.cache
def library_versions() -> dict[str, str | None]:
    """Installed versions without importing the libraries (keeps ``mpk --help`` light). Read once per process."""
    out: dict[str, str | None] = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def hash_arrays(samples: list[tuple[np.ndarray, ...]]) -> str:
    """sha256 over sample arrays (dtype, shape, bytes); identical data -> identical key."""
    return hash_samples(samples)


@functools.cache
def code_hash(*relative: str) -> str:
    """sha256 of mpk source files (paths relative to ``packager/``; a folder means its ``*.py``)."""
    base = Path(__file__).parent
    h = hashlib.sha256()
    for rel in relative:
        p = base / rel
        files = sorted(p.glob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def exporter_code_hash() -> str:
    """sha256 of the exporter sources: a change in how an artifact is made (a quantizer fix, say) must not be
    answered with an artifact the old code made, even though mpk's version number did not move."""
    return code_hash("export")


def make_key(**fields: Any) -> str:
    """sha256 of the canonical JSON of ``fields`` plus library versions, mpk version and exporter code."""
    payload = {"fields": fields, "libraries": library_versions(), "mpk": __version__, "code": exporter_code_hash()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class CacheHit:
    """An artifact copied out of the cache: its files' sha256 were checked against the stored ones."""

    artifact: ExportedArtifact
    #: sha256 of each file (relative to the artifact's folder), as checked
    sha256: dict[str, str]
    extra: dict[str, Any]


class ArtifactCache:
    """``get(key, out_dir)`` -> :class:`CacheHit` with the files copied into out_dir, or None;
    ``put(key, artifact, base, sha256)`` stores the files under ``base`` with their sha256.

    ``sha256`` hashes a file or a folder (an .mlpackage) the way the manifest does; the copies ``get``
    hands back are hashed with it and must match what ``put`` stored.
    """

    def __init__(self, root: Path | None = None, *, sha256: Callable[[Path], str], enabled: bool = True) -> None:
        self.root = (root or cache_dir()) / "artifacts"
        self.enabled = enabled
        self._sha256 = sha256

    def contains(self, key: str) -> bool:
        return self.enabled and (self.root / key / "meta.json").is_file()

    def get(self, key: str, out_dir: Path) -> CacheHit | None:
        entry = self.root / key
        meta_path = entry / "meta.json"
        if not self.enabled or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != ARTIFACT_FORMAT:
                return None
            a, expected = meta["artifact"], meta["sha256"]
            profiling = a.get("profiling_files") or {}
            names = [a["path"], *a["extra_files"], *profiling.values()]
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                src, dst = entry / "files" / name, out_dir / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst)
                else:
                    shutil.copy2(src, dst)
            got = {name: self._sha256(out_dir / name) for name in names}
        except OSError as e:
            if e.errno in DISK_FULL:
                raise  # copying into the package failed for lack of space: not a cache problem
            return None  # a damaged entry is a miss, not an error: we re-export
        except (KeyError, ValueError, TypeError):
            return None
        if got != {n: expected.get(n) for n in names}:
            # bit rot or an edit inside the cache: never hand that out; drop the entry so it is rebuilt
            for name in names:
                p = out_dir / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        art = ExportedArtifact(
            backend=a["backend"],
            scheme=a["scheme"],
            path=out_dir / a["path"],
            extra_files=[out_dir / p for p in a["extra_files"]],
            inputs=[TensorSpec.from_dict(d) for d in a["inputs"]],
            outputs=[TensorSpec.from_dict(d) for d in a["outputs"]],
            delegation=a["delegation"],
            op_summary=a["op_summary"],
            details=a["details"],
            profiling_files={k: out_dir / p for k, p in profiling.items()},
        )
        return CacheHit(art, got, meta.get("extra", {}))

    def put(
        self,
        key: str,
        artifact: ExportedArtifact,
        base: Path,
        sha256: dict[str, str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Store ``artifact`` (paths relative to ``base``; ``sha256`` by relative path). Failures are ignored."""
        if not self.enabled:
            return
        tmp: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
            kinds = list(artifact.profiling_files)
            paths = [artifact.path, *artifact.extra_files, *artifact.profiling_files.values()]
            rel = [p.relative_to(base).as_posix() for p in paths]
            for p, r in zip(paths, rel, strict=True):
                dst = tmp / "files" / r
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(p, dst) if p.is_dir() else shutil.copy2(p, dst)
            d = asdict(artifact)
            d.update(
                path=rel[0],
                extra_files=rel[1 : len(rel) - len(kinds)],
                profiling_files=dict(zip(kinds, rel[len(rel) - len(kinds) :], strict=True)),
                inputs=[s.to_dict() for s in artifact.inputs],
                outputs=[s.to_dict() for s in artifact.outputs],
            )
            meta = {"format": ARTIFACT_FORMAT, "artifact": d, "sha256": sha256, "extra": extra or {}}
            (tmp / "meta.json").write_text(json.dumps(meta, default=str))
            final = self.root / key
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except OSError:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


class Cache:
    """The cache folder as the pipeline uses it; ``enabled=False`` (``--no-cache``) makes every lookup a miss
    and stores nothing, except the trained built-in weights (:mod:`packager.models.builtin`)."""

    def __init__(self, root: Path | None = None, *, sha256: Callable[[Path], str], enabled: bool = True) -> None:
        self.root = root or cache_dir()
        self.enabled = enabled
        self.artifacts = ArtifactCache(self.root, sha256=sha256, enabled=enabled)

    # -- small JSON records: model info, verification results, zstd sizes ------------------------------------

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        try:
            rec = json.loads((self.root / kind / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        # the key is stored inside too: a file renamed or copied under another key is not believed
        if not isinstance(rec, dict) or rec.get("key") != key or not isinstance(rec.get("value"), dict):
            return None
        return rec["value"]

    def put_record(self, kind: str, key: str, value: dict[str, Any]) -> None:
        if not self.enabled:
            return
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "value": value}, f, default=str)
            os.replace(tmp, folder / f"{key}.json")
        except OSError:
            pass

    # -- arrays: fp32 references --------------------------------------------------------------------------

    def arrays(self, kind: str, key: str) -> list[np.ndarray] | None:
        """The arrays stored under ``key`` in order, or None on a miss or if their hash does not match."""
        if not self.enabled:
            return None
        try:
            with np.load(self.root / kind / f"{key}.npz", allow_pickle=False) as z:
                n = int(z["count"])
                arrays = [z[f"a{i}"] for i in range(n)]
                stored = str(z["sha256"])
        except (OSError, ValueError, KeyError):
            return None
        return arrays if hash_samples([tuple(arrays)]) == stored else None

    def put_arrays(self, kind: str, key: str, arrays: list[np.ndarray]) -> None:
        if not self.enabled:
            return
        folder = self.root / kind
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
            payload = {f"a{i}": a for i, a in enumerate(arrays)}
            with os.fdopen(fd, "wb") as f:
                np.savez(f, count=np.int64(len(arrays)), sha256=np.str_(hash_samples([tuple(arrays)])), **payload)
            os.replace(tmp, folder / f"{key}.npz")
        except OSError:
            pass
