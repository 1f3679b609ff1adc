"""devices.yaml as a whole: the devices, the run defaults and the budgets, checked together.

``mpk bench``, ``mpk devices`` and ``mpk gate --budgets`` all read the file through
:func:`load_devices` (or :func:`load_budgets` for the gate), so the gate never runs on a
devices.yaml that the bench would refuse. Every problem in every section is reported at
once, each with its path::

    devices.yaml: devices[2].threads: expected an integer >= 1, got 'four'
    devices.yaml: budgets[0].p90ms: unknown key 'p90ms'; did you mean 'p90_ms'? ...

This module composes three parsers that import nothing of each other:
:mod:`runners.devices` (devices and defaults), :mod:`runners.gate.budgets` (budgets) and the
runner and transport registries (the names a device may use).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpk.errors import ConfigError, UsageError
from mpk.registry import suggest
from mpk.yamlio import load_yaml
from runners.devices import DeviceSpec, Problems, RunSettings, parse_defaults, parse_device_list
from runners.drivers import DRIVERS
from runners.gate.budgets import BudgetRule, parse_budgets
from runners.transport import TRANSPORTS

_TOP_KEYS = ("version", "defaults", "devices", "budgets")


@dataclass(frozen=True)
class DevicesConfig:
    version: int
    defaults: RunSettings
    devices: list[DeviceSpec]
    budgets: list[BudgetRule]
    source: str = "devices.yaml"

    def get(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.id == device_id:
                return d
        raise UsageError(suggest(device_id, [d.id for d in self.devices], "device"))


def parse_devices(raw: Any, source: str = "devices.yaml") -> DevicesConfig:
    """Validate an already-loaded devices.yaml document. Raises one ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"expected a mapping with 'version' and 'devices', got {type(raw).__name__}"])
    p = Problems()
    p.unknown_keys(raw, _TOP_KEYS, "")
    if raw.get("version") != 1:
        p.append(f"version: expected 1, got {raw.get('version')!r}")
    defaults = parse_defaults(p, raw.get("defaults"))
    devices = parse_device_list(p, raw.get("devices"), DRIVERS.names(), TRANSPORTS.names())
    rules, budget_problems = parse_budgets(raw.get("budgets"), "budgets")
    p.extend(budget_problems)
    if p:
        raise ConfigError(source, list(p))
    return DevicesConfig(version=1, defaults=defaults, devices=devices, budgets=rules, source=source)


def load_devices(path: Path | str) -> DevicesConfig:
    """Read and validate devices.yaml. Any problem (missing, not UTF-8, not YAML, a bad key): exit 2."""
    path = Path(path)
    raw = load_yaml(path, what="devices file", hint="copy devices.yaml from the mpk repo root")
    return parse_devices(raw, path.name)


def load_budgets(path: Path | str) -> list[BudgetRule]:
    """The ``budgets:`` of a devices.yaml (validated whole, as ``mpk bench`` would), or of a budgets-only file.

    A budgets-only file holds nothing but ``budgets:``. Raises one ConfigError listing every problem; a
    file without any rule is one too (a gate against it would gate nothing).
    """
    p = Path(path)
    doc = load_yaml(p, what="budgets file")
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(str(p), [f"expected a mapping at the top level, got {type(doc).__name__}"])
    rules = parse_devices(doc, p.name).budgets if "devices" in doc else _budgets_only(doc, p)
    if not rules:  # gating against a file without a rule would gate nothing
        raise ConfigError(str(p), ["budgets: the file sets no budget rule (expected a non-empty budgets: list)"])
    return rules


def _budgets_only(doc: dict[str, Any], p: Path) -> list[BudgetRule]:
    only = "unknown key; a budgets file holds only 'budgets' (or use devices.yaml)"
    extra = [f"{k}: {only}" for k in doc if k != "budgets"]
    if extra:
        raise ConfigError(str(p), extra)
    rules, problems = parse_budgets(doc.get("budgets"), "budgets")
    if problems:
        raise ConfigError(str(p), problems)
    return rules
