"""Where a package is written, so that nothing the user had is lost.

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
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mpk.errors import InfraError, OutputNotWritable, UsageError
from packager.cache import DISK_FULL


class Staging:
    """The staging dir of one run; :meth:`commit` swaps it in as OUT."""

    def __init__(self, out: Path, force: bool) -> None:
        self.out = out
        self.dir = _prepare(out, force)
        #: where the previous contents of OUT went, once committed
        self.previous: Path | None = None

    def commit(self) -> None:
        self.previous = _swap_into_place(self.dir, self.out)


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
        if staging.dir.exists():
            shutil.rmtree(staging.dir, ignore_errors=True)


def umask_mode(path: Path) -> None:
    """mkdtemp makes 0700 dirs; the package must get the permissions a plain mkdir would (readable by a CI user)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


def _prepare(out: Path, force: bool) -> Path:
    """Refuse unsafe targets before any work; return a fresh staging dir beside ``out``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as e:
            raise OutputNotWritable(f"cannot read output directory {out}: {e.strerror or e}") from None
        if entries and not (out / "manifest.json").is_file() and not force:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise UsageError(
                f"{out} holds files that are not an mpk package ({shown}); refusing to replace them",
                hint=f"choose another --out, or pass --force (they are then kept in {out.name}.prev)",
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))
        umask_mode(staging)
        return staging
    except OSError as e:
        raise OutputNotWritable(
            f"output directory {out} is not writable: {e.strerror or e}", hint="choose another --out"
        ) from None


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove ``.OUT.staging-PID-*`` dirs whose PID is no longer running (a SIGKILLed or timed-out run cannot clean
    up after itself). A dir of a live PID, or one not named by this scheme, is never touched. Returns what went."""
    removed = []
    for p in out.parent.glob(f".{out.name}.staging-*"):
        pid_text = p.name[len(f".{out.name}.staging-") :].split("-", 1)[0]
        if not p.is_dir() or not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, someone else's
        return True
    return True


def _swap_into_place(staging: Path, out: Path) -> Path | None:
    """Move the old OUT aside (kept as OUT.prev), then rename staging -> OUT. Returns where the old one went."""
    previous = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            previous = out.with_name(out.name + ".prev")
            n = 1
            # one generation of mpk packages is kept; anything else already there is never deleted
            while previous.exists() and not (previous / "manifest.json").is_file():
                n += 1
                previous = out.with_name(f"{out.name}.prev{n}")
            if previous.exists():
                shutil.rmtree(previous)
            os.replace(out, previous)
    os.replace(staging, out)
    return previous
