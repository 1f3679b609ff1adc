"""The one YAML reader of mpk: safe, and a duplicate key is an error.

PyYAML keeps the last of two equal keys without a word, so a budget written
``{p90_ms: 0.02, p90_ms: 500}`` would gate at 500 ms. Every YAML file mpk reads
(devices.yaml, budgets, recipes, ``mpk tune --replay``) goes through :func:`load_yaml`,
which refuses it with the line of each key::

    >>> parse_yaml("budgets:\\n  - {p90_ms: 0.02, p90_ms: 500}\\n", "devices.yaml")
    Traceback (most recent call last):
    ...
    mpk.errors.ConfigError: devices.yaml: line 2: duplicate key 'p90_ms' (first at line 2)

A YAML merge (``<<: *defaults``) followed by a key that overrides the merged one is not a
duplicate: that is what merges are for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mpk.errors import ConfigError, UsageError
from mpk.textio import read_text


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first})")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse a key given twice (merge keys excepted)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:  # before flatten_mapping: only this mapping's own keys
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: SafeLoader's own error says so
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _Duplicate(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """The document in ``text``; ConfigError (exit 2) naming ``source`` when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except _Duplicate as e:
        raise ConfigError(source, [str(e)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError(source, ["not usable YAML: nested too deeply"]) from None


def load_yaml(path: Path | str, *, what: str, hint: str | None = None) -> Any:
    """Read and parse a YAML file. Missing, unreadable, not UTF-8, not YAML, duplicate key: exit 2, one line."""
    p = Path(path)
    text = read_text(p, what=what, hint=hint)
    if "\x00" in text:  # YAML forbids NUL; PyYAML's message for it is a page of context
        raise UsageError(f"{what} {p} is not YAML text (it holds NUL bytes)")
    return parse_yaml(text, str(p))
