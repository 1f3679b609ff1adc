"""Reading the user's files and writing mpk's own, with one clear line for every way that can go wrong.

Every input file mpk reads (recipe, manifest, devices.yaml, results, budgets, a tune replay) comes
through :func:`read_text`, so a missing file, a folder, a file we may not read, or bytes that are not
UTF-8 all end the same way: one line naming the file, exit 2, never a traceback::

    >>> read_text(Path("/nonexistent/devices.yaml"), what="devices file")
    Traceback (most recent call last):
    ...
    mpk.errors.UsageError: devices file not found: /nonexistent/devices.yaml

Writes go to a temporary file beside the target and are renamed over it, so a reader (or a full
disk) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mpk.errors import MpkError, OutputNotWritable, UsageError


def read_text(path: Path | str, *, what: str, hint: str | None = None, error: type[MpkError] = UsageError) -> str:
    """The file's text; ``error`` (default UsageError, exit 2) with one line when it cannot be read as UTF-8.

    ``error`` says whose file it is: the user's input (UsageError) or a runner's output (SchemaError, exit 4).
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found: {p}", hint=hint) from None
    except IsADirectoryError:
        raise error(f"{what} {p} is a directory, not a file") from None
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {p} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def read_json(path: Path | str, *, what: str, error: type[MpkError] = UsageError) -> Any:
    """Parse the file as JSON; ``error`` (default UsageError, exit 2) with the line and column when it is not."""
    text = read_text(path, what=what, error=error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} {path} is not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise error(f"{what} {path} is not usable JSON: nested too deeply") from None


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``.

    An OSError (read-only folder, full disk) is :class:`~mpk.errors.OutputNotWritable` (exit 4) and
    leaves ``path`` as it was.
    """
    p = Path(path)
    tmp: str | None = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; a results file must be readable like any other
        os.replace(tmp, p)
        tmp = None
    except OSError as e:
        raise OutputNotWritable(f"cannot write {p}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return p


def write_json_atomic(path: Path | str, doc: Any, *, indent: int = 1) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=indent) + "\n")


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: read once at import (umask is process-wide; toggling it later would race with other threads' files)
UMASK = _read_umask()
