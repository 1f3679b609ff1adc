"""Load and validate the runner contract (spec in, result out) against its JSON Schemas.

Every runner -- the host runner, the virtual device, the Android and iOS apps --
speaks these two documents. Validating at both ends means a runner that drifts
from the contract fails loudly with the path of the bad field
(``artifacts[0].sha256: 'abc' does not match '^[0-9a-f]{64}$'``) instead of
feeding a wrong number to the gate.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from mpk.errors import SchemaError, UsageError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SPEC_VERSION = "mpk.runner-spec/1"
RESULT_VERSION = "mpk.runner-result/1"


@functools.cache
def _validator(name: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource

    # results.schema.json points into runner_result.schema.json by $id, so every schema here is registered.
    resources = []
    for f in SCHEMA_DIR.glob("*.schema.json"):
        doc = json.loads(f.read_text())
        if "$id" in doc:
            resources.append((doc["$id"], Resource.from_contents(doc)))
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=Registry().with_resources(resources))


def json_path(parts: Any) -> str:
    """``['artifacts', 0, 'sha256']`` -> ``artifacts[0].sha256`` (``<root>`` when empty)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def schema_problems(doc: Any, schema: str) -> list[str]:
    """Every violation of ``schema`` ('runner_spec', 'runner_result', 'results'), each with its path."""
    errors = sorted(_validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{json_path(e.absolute_path)}: {e.message}" for e in errors]


def validate(doc: Any, schema: str, *, what: str) -> None:
    """Raise :class:`SchemaError` listing every violation, each with the bad field's path."""
    problems = schema_problems(doc, schema)
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SchemaError(f"{what} does not match {schema}:\n  " + "\n  ".join(shown) + more)


def read_json(path: Path, *, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise SchemaError(f"{what} {path} is not JSON: {e}") from None


def load_spec(path: Path) -> dict[str, Any]:
    spec = read_json(path, what="runner spec")
    validate(spec, "runner_spec", what=f"runner spec {path}")
    return spec


def validate_result(result: Any, *, what: str = "runner result") -> dict[str, Any]:
    validate(result, "runner_result", what=what)
    return result


def load_result(path: Path) -> dict[str, Any]:
    return validate_result(read_json(path, what="runner result"), what=f"runner result {path}")
