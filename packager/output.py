"""Where a package is written, so that nothing the user had is lost: :mod:`mpk.outdir`, as for ``mpk bench``
and ``mpk report``, with a package recognised by its ``manifest.json``.

1. Before any work: OUT must be creatable, and if it exists it must be empty or an earlier mpk package;
   anything else is refused (UsageError) unless ``force``. A path that cannot be written is
   OutputNotWritable (exit 4).
2. Everything is written into a staging dir beside OUT (``.OUT.staging-PID-XXXX``); each artifact is exported
   into its own temp dir and renamed into place. A staging dir left by a run that was killed (its PID no longer
   runs) is removed by the next run for the same OUT.
3. Only when the manifest is written is OUT swapped in: the previous OUT is renamed to ``OUT.prev`` (one
   generation kept; an older mpk package there is replaced), then the staging dir renamed to OUT. A crash,
   Ctrl-C or a full disk before that leaves OUT exactly as it was and removes the staging dir.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from mpk.errors import InfraError
from mpk.outdir import OutputKind, prepare, remove_stale_staging, umask_mode
from packager.cache import DISK_FULL

__all__ = ["PACKAGE_OUTPUT", "Staging", "remove_stale_staging", "staged", "umask_mode"]

PACKAGE_OUTPUT = OutputKind("package", {}, owner="manifest.json")


class Staging:
    """The staging dir of one run; :meth:`commit` swaps it in as OUT."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out = out
        self._staged = prepare(out, PACKAGE_OUTPUT, force=force)
        self.dir = self._staged.staging
        #: where the previous contents of OUT went, once committed
        self.previous: Path | None = None

    def commit(self) -> None:
        self.previous = self._staged.commit()


@contextlib.contextmanager
def staged(out: Path, force: bool) -> Iterator[Staging]:
    """A :class:`Staging` for ``out``; removed unless committed. OSError becomes InfraError (exit 4) that
    says OUT was not changed (disk full gets its own hint)."""
    staging = Staging(out, force)
    try:
        yield staging
    except OSError as e:
        if e.errno in DISK_FULL:
            raise InfraError(
                f"disk full while writing the package ({e.strerror}); nothing in {out} was changed",
                hint=f"free space on the disk holding {out.parent} (and $MPK_CACHE_DIR), then re-run",
            ) from None
        raise InfraError(f"cannot write the package: {e}; nothing in {out} was changed") from None
    finally:
        staging._staged.abandon()
