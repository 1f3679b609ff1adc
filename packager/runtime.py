"""Open any artifact on this host's runtime, by backend name: the one entry point the host runner uses.

    >>> sess = open_session("onnx", Path("out/model-int8.onnx"), threads=1)   # doctest: +SKIP
    >>> logits, = sess.run((image,))                                          # doctest: +SKIP

Dispatches through :data:`packager.export.EXPORTERS`, so only the backend asked
for is imported. CoreML off macOS raises :class:`~mpk.errors.RuntimeMissing`
(exit 4): the artifact is fine, this host just cannot run it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mpk.errors import UsageError
from packager.export import EXPORTERS
from packager.export.base import HostSession

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from mpk.contract.profile import Profile


def open_session(backend: str, path: Path, *, threads: int | None = None) -> HostSession:
    """Load ``path`` with ``backend``'s host runtime. ``threads`` is a hint (None = runtime default)."""
    EXPORTERS.check_name(backend)
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such artifact")
    if threads is not None and threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    return EXPORTERS.get(backend)().open(path, threads=threads)


def session_opener(backend: str, *, threads: int | None = None) -> Callable[[Path], HostSession]:
    """``open(path)`` for ``backend``, with its session class imported now rather than at the first open.

    The host runner calls this before reading its memory baseline, so the baseline already holds
    everything but the model.
    """
    EXPORTERS.check_name(backend)
    exporter = EXPORTERS.get(backend)()

    def open_path(path: Path) -> HostSession:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such artifact")
        return exporter.open(Path(path), threads=threads)

    return open_path


def profile_artifact(backend: str, scheme: str, path: Path, inputs: tuple[np.ndarray, ...], *,
                     threads: int | None = None, files: dict[str, Path] | None = None) -> Profile:  # fmt: skip
    """The profiled pass of one artifact on this host (:mod:`packager.profiling`): the runtime's own per-op
    timings where it has them, else what it cannot do and mpk's labelled estimate. ``files``: the package's
    ``profiling`` files (op map, ETRecord) by kind."""
    from packager.profiling import profile_artifact as run

    return run(backend, scheme, Path(path), inputs, threads=threads, files=files)


def backend_for_path(path: Path) -> str:
    """The backend whose artifact suffix ``path`` has, for callers holding only a file (``mpk inspect``).

    Manifests carry the backend; this is for a bare file, where the suffix is all there is.
    """
    from packager.export.capabilities import BACKENDS

    for name, caps in BACKENDS.items():
        if Path(path).name.endswith(caps.suffix):
            return name
    known = ", ".join(c.suffix for c in BACKENDS.values())
    raise UsageError(f"{path}: unknown artifact type (expected one of {known})")


__all__ = ["HostSession", "backend_for_path", "open_session", "profile_artifact", "session_opener"]
