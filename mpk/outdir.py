"""Output folders that lose nothing: built beside the target, swapped in whole, the previous one kept.

``mpk bench --out OUT`` and ``mpk report --out OUT`` (and ``mpk gate --report OUT``) work the way
``mpk package`` does:

1. before any work, an OUT holding files mpk did not write is refused (exit 2) unless ``--force``;
   a path that cannot be written is exit 4;
2. everything is written into a staging folder beside OUT (``.OUT.staging-XXXX``);
3. at the end the previous OUT is renamed to ``OUT.prev`` (one generation kept; a folder there that
   mpk did not write is never deleted: the previous one goes to ``OUT.prev2`` and so on), then the
   staging folder is renamed to OUT. A crash, Ctrl-C or a full disk before that leaves OUT exactly
   as it was.

A folder is mpk's when it holds the marker ``.mpk-output.json`` naming its kind and every entry
beside it (a folder from before the marker existed is recognised by its file names and contents).
An interrupted run can keep what it had under ``OUT.partial`` instead of deleting it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mpk.errors import OutputNotWritable, UsageError
from mpk.textio import UMASK

MARKER = ".mpk-output.json"


@dataclass(frozen=True)
class OutputKind:
    """What one command writes. ``legacy`` recognises a folder written before the marker existed: entry
    name -> a text its file must contain (None: may be there, any content). Files with a text must be there."""

    name: str
    legacy: Mapping[str, str | None]


def is_ours(path: Path, kind: OutputKind) -> bool:
    """Whether ``path`` (a folder) holds only what mpk wrote for ``kind``."""
    try:
        entries = {p.name for p in path.iterdir()}
    except OSError:
        return False
    marker = path / MARKER
    if marker.is_file():
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
            listed = set(doc["entries"])
            return doc["kind"] == kind.name and entries - {MARKER} <= listed
        except (OSError, ValueError, KeyError, TypeError):
            return False
    required = {name for name, text in kind.legacy.items() if text is not None}
    if not entries or not entries <= set(kind.legacy) or not required <= entries:
        return False
    for name in entries:
        text = kind.legacy[name]
        if text is None:
            continue
        try:
            with (path / name).open("r", encoding="utf-8", errors="replace") as f:
                if text not in f.read(4096):
                    return False
        except OSError:
            return False
    return True


@dataclass
class Staged:
    """A staging folder for ``out``; :meth:`commit` swaps it in, :meth:`abandon` removes or keeps it."""

    out: Path
    staging: Path
    kind: OutputKind

    def _mark(self, folder: Path) -> None:
        entries = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
        (folder / MARKER).write_text(json.dumps({"kind": self.kind.name, "entries": entries}) + "\n")

    def commit(self) -> Path | None:
        """Swap the staging folder in as ``out``. Returns where the previous ``out`` went (None if none)."""
        try:
            self._mark(self.staging)
            previous = None
            if self.out.exists():
                if self.out.is_dir() and not any(self.out.iterdir()):
                    self.out.rmdir()
                else:
                    previous = _free_slot(self.out, "prev", self.kind)
                    os.replace(self.out, previous)
            os.replace(self.staging, self.out)
        except OSError as e:
            raise OutputNotWritable(f"cannot move the new {self.out} into place: {e.strerror or e}") from None
        return previous

    def abandon(self, *, keep: bool = False) -> Path | None:
        """Remove the staging folder, or with ``keep`` move it to ``OUT.partial``; ``out`` is never touched."""
        if not self.staging.exists():
            return None
        if keep:
            try:
                self._mark(self.staging)
                target = _free_slot(self.out, "partial", self.kind)
                os.replace(self.staging, target)
                return target
            except OSError:
                pass  # could not keep it: at least do not leave a staging folder behind
        shutil.rmtree(self.staging, ignore_errors=True)
        return None


def _free_slot(out: Path, suffix: str, kind: OutputKind) -> Path:
    """``OUT.<suffix>`` emptied for reuse when mpk wrote it; else the first ``OUT.<suffix>N`` that is free or mpk's."""
    n = 1
    while True:
        slot = out.with_name(f"{out.name}.{suffix}" + (str(n) if n > 1 else ""))
        if not slot.exists() and not slot.is_symlink():
            return slot
        if slot.is_dir() and not slot.is_symlink() and is_ours(slot, kind):
            shutil.rmtree(slot)
            return slot
        n += 1


def prepare(out: Path | str, kind: OutputKind, *, force: bool = False, flag: str = "--out") -> Staged:
    """Refuse an unsafe ``out`` before any work; return a fresh staging folder beside it.

    ``out`` holding files mpk did not write: UsageError (exit 2) unless ``force`` (they are then kept in
    ``OUT.prev``). ``out`` not writable (read-only mount, no permission, full disk): OutputNotWritable (exit 4).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} exists and is not a directory")
    if out.is_dir() and not force:
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as e:
            raise OutputNotWritable(f"cannot read output directory {out}: {e.strerror or e}") from None
        if entries and not is_ours(out, kind):
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise UsageError(
                f"{out} holds files mpk did not write for {kind.name} ({shown}); refusing to replace them",
                hint=f"choose another {flag}, or pass --force (they are then kept in {out.name}.prev)",
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp makes 0700; outputs get what a plain mkdir would
    except OSError as e:
        raise OutputNotWritable(
            f"output directory {out} is not writable: {e.strerror or e}", hint=f"choose another {flag}"
        ) from None
    return Staged(out=out, staging=staging, kind=kind)
