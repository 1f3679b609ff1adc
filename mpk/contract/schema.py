"""The JSON Schemas of mpk's file formats, and one way to check a document against them.

Every schema lives in ``mpk/contract/schemas/`` and is registered by its ``$id``, so one
schema can point into another (a results cell holds a runner result's ``artifact_result``).
Problems come back with the path of the bad field::

    >>> problems({"schema_version": "mpk.runner-spec/1"}, "runner_spec")[0]
    "<root>: 'run_id' is a required property"
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from mpk.errors import MpkError, SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

#: schema name (file stem) -> what it describes, for messages
SCHEMAS: dict[str, str] = {
    "manifest": "package manifest",
    "runner_spec": "runner spec",
    "runner_result": "runner result",
    "results": "results file",
    "results-1": "results file (version 1)",
    "opmap": "op map",
}


@functools.cache
def _validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for f in sorted(SCHEMA_DIR.glob("*.schema.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, registry=Registry().with_resources(resources))


def schema_path(name: str) -> Path:
    """The file of schema ``name`` (``manifest``, ``runner_spec``, ``runner_result``, ``results``)."""
    return SCHEMA_DIR / f"{name}.schema.json"


def json_path(parts: Any) -> str:
    """``['artifacts', 0, 'sha256']`` -> ``artifacts[0].sha256`` (``<root>`` when empty)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def problems(doc: Any, name: str) -> list[str]:
    """Every violation of schema ``name``, each as ``path: message``; empty when ``doc`` is valid."""
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]


def check(doc: Any, name: str, *, what: str, error: type[MpkError] = SchemaError) -> None:
    """Raise ``error`` listing every violation of schema ``name`` (at most 20 shown), each with its path.

    ``error`` is the caller's verdict on whose fault a bad document is: a user's input file is a
    :class:`~mpk.errors.UsageError` (exit 2); a runner's output or a document mpk is about to write is a
    :class:`~mpk.errors.SchemaError` (exit 4).
    """
    found = problems(doc, name)
    if found:
        shown = found[:20]
        more = f"\n  ... and {len(found) - 20} more" if len(found) > 20 else ""
        raise error(f"{what} does not match the {SCHEMAS.get(name, name)} schema:\n  " + "\n  ".join(shown) + more)
