"""The devices and run settings of devices.yaml, as frozen dataclasses: the leaf every runner module may use.

This module imports nothing of ``runners``: the drivers, the matrix and the gate all
depend on it, and it on none of them. :mod:`runners.config` reads the whole file
(devices, defaults and budgets) and hands in the runner and transport names a device
may use. Every problem is collected and reported together with its path, so a
misspelt key can never silently switch a setting off::

    devices.yaml: devices[2].threads: expected an integer >= 1, got 'four'
    devices.yaml: defaults.min_itertions: unknown key; did you mean 'min_iterations'?

Example (the repo root ships a complete one)::

    version: 1
    defaults: {warmup_iterations: 5, min_iterations: 50, min_seconds: 2}
    devices:
      - {id: host, kind: host}
      - {id: pixel-7, kind: android, serial: 28121FDH2000AB, transport: adb_server}
      - {id: virtual-android, kind: emulator}
      - {id: pixel-8, kind: android, serial: 37241FDJH00C5X, host: lab-2}   # attached to lab-2 (mpk bench --ray)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from mpk.registry import suggest

KINDS = ("android", "ios", "host", "emulator")
#: the runner a kind gets when devices.yaml names none
DEFAULT_RUNNER = {"host": "host", "android": "android_app", "emulator": "android_app", "ios": "ios_app"}
#: the transport a kind gets when devices.yaml names none; adb_shell speaks to mpk's virtual adbd directly
DEFAULT_TRANSPORT = {"host": "local", "android": "adb_server", "emulator": "adb_shell", "ios": None}


@dataclass(frozen=True)
class RunSettings:
    """How long and how hard to measure. ``min_iterations`` AND ``min_seconds`` must both be met;
    ``max_seconds`` caps the timed loop (after ``min_iterations``)."""

    warmup_iterations: int = 5
    min_iterations: int = 30
    min_seconds: float = 2.0
    max_seconds: float | None = 60.0
    cooldown_s: float = 5.0
    thermal_limit_c: float | None = 45.0
    threads: int = 1
    cpu_affinity: tuple[int, ...] | None = None
    #: after the timed loop, a separate profiled pass per artifact (``mpk bench --profile``, or ``profile: true``)
    profile: bool = False

    def to_spec(self) -> dict[str, Any]:
        """The ``settings`` object of a runner spec (the subset runners understand)."""
        spec: dict[str, Any] = {
            "threads": self.threads,
            "cpu_affinity": list(self.cpu_affinity) if self.cpu_affinity is not None else None,
            "warmup_iterations": self.warmup_iterations,
            "min_iterations": self.min_iterations,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
        }
        if self.profile:
            spec["profile"] = True
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {**self.to_spec(), "cooldown_s": self.cooldown_s, "thermal_limit_c": self.thermal_limit_c}

    def override(self, **kw: Any) -> RunSettings:
        """A copy with every non-None keyword applied (CLI flags over YAML)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: str
    runner: str
    transport: str | None = None
    serial: str | None = None
    address: str | None = None
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    #: the machine the device hangs off, as its ``mpk agent --host`` names it; only ``mpk bench --ray`` reads it
    host: str | None = None
    #: profile every artifact on this device (``profile: true``); ``mpk bench --profile`` turns it on everywhere
    profile: bool = False

    @property
    def is_virtual(self) -> bool:
        """An emulator entry without serial/address is served by mpk's own virtual device."""
        return self.kind == "emulator" and not self.serial and not self.address

    @property
    def shares_host_cpu(self) -> bool:
        """Host and emulated devices time on this machine's CPU, so they must never run together."""
        return self.kind in ("host", "emulator")

    def settings(self, defaults: RunSettings) -> RunSettings:
        return defaults.override(threads=self.threads, cpu_affinity=self.cpu_affinity, profile=self.profile or None)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("id", "kind", "runner", "transport", "serial", "address", "threads")}
        d["cpu_affinity"] = list(self.cpu_affinity) if self.cpu_affinity is not None else None
        d["facts"] = dict(self.facts)
        if self.host is not None:  # only when set: a file without hosts describes its devices as before
            d["host"] = self.host
        if self.profile:
            d["profile"] = True
        return d


# ---------------------------------------------------------------- validation helpers


class Problems(list):
    """Every problem found in a config, each prefixed with its path; reported together at the end."""

    def unknown_keys(self, raw: dict, allowed: tuple[str, ...], where: str) -> None:
        for k in raw:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
                self.append(f"{_join(where, str(k))}: unknown key{hint}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _int(p: Problems, raw: dict, key: str, where: str, *, minimum: int) -> int | None:
    if key not in raw or raw[key] is None:
        return None
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        p.append(f"{_join(where, key)}: expected an integer >= {minimum}, got {v!r}")
        return None
    return v


def _num(p: Problems, raw: dict, key: str, where: str, *, minimum: float = 0.0) -> float | None:
    if key not in raw or raw[key] is None:
        return None
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v < minimum:
        p.append(f"{_join(where, key)}: expected a number >= {minimum:g}, got {v!r}")
        return None
    return float(v)


def _str(p: Problems, raw: dict, key: str, where: str) -> str | None:
    if key not in raw or raw[key] is None:
        return None
    v = raw[key]
    if not isinstance(v, str) or not v:
        p.append(f"{_join(where, key)}: expected a non-empty string, got {v!r}")
        return None
    return v


def _affinity(p: Problems, raw: dict, where: str) -> tuple[int, ...] | None:
    v = raw.get("cpu_affinity")
    if v is None:
        return None
    ok = isinstance(v, list) and v and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v)
    if not ok:
        p.append(f"{_join(where, 'cpu_affinity')}: expected a non-empty list of CPU numbers >= 0, got {v!r}")
        return None
    return tuple(v)


def _name(p: Problems, value: str | None, known: list[str] | tuple[str, ...], what: str, where: str) -> str | None:
    if value is not None and value not in known:
        p.append(f"{where}: {suggest(value, known, what)}")
        return None
    return value


# ---------------------------------------------------------------- parsing

_DEFAULT_KEYS = ("warmup_iterations", "min_iterations", "min_seconds", "max_seconds", "cooldown_s",
                 "thermal_limit_c", "threads", "cpu_affinity")  # fmt: skip
_DEVICE_KEYS = ("id", "kind", "serial", "address", "transport", "runner", "threads", "cpu_affinity", "facts", "host",
                "profile")  # fmt: skip
#: a host name: letters, digits, '.', '_', '-', at most 63 characters (it becomes a Ray node label's value)
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
#: facts a device entry may pin (the runner result's device_facts, minus what is measured per run)
_FACT_KEYS = ("model", "manufacturer", "soc", "abi", "os", "os_version", "cores", "governor", "cpu_max_freq_khz")


def parse_defaults(p: Problems, raw: Any) -> RunSettings:
    if raw is None:
        return RunSettings()
    if not isinstance(raw, dict):
        p.append(f"defaults: expected a mapping, got {type(raw).__name__}")
        return RunSettings()
    p.unknown_keys(raw, _DEFAULT_KEYS, "defaults")
    w = "defaults"
    kw: dict[str, Any] = {
        "warmup_iterations": _int(p, raw, "warmup_iterations", w, minimum=0),
        "min_iterations": _int(p, raw, "min_iterations", w, minimum=1),
        "min_seconds": _num(p, raw, "min_seconds", w),
        "cooldown_s": _num(p, raw, "cooldown_s", w),
        "threads": _int(p, raw, "threads", w, minimum=1),
        "cpu_affinity": _affinity(p, raw, w),
        "max_seconds": _num(p, raw, "max_seconds", w),
        "thermal_limit_c": _num(p, raw, "thermal_limit_c", w),
    }
    s = RunSettings().override(**kw)
    # An explicit null switches the cap / thermal wait off; a missing key keeps the default.
    if "max_seconds" in raw and raw["max_seconds"] is None:
        s = replace(s, max_seconds=None)
    if "thermal_limit_c" in raw and raw["thermal_limit_c"] is None:
        s = replace(s, thermal_limit_c=None)
    if s.max_seconds is not None and s.max_seconds < s.min_seconds:
        p.append(f"defaults.max_seconds: {s.max_seconds:g} is below min_seconds {s.min_seconds:g}")
    return s


def _parse_device(p: Problems, raw: Any, where: str, runners: list[str], transports: list[str]) -> DeviceSpec | None:
    if not isinstance(raw, dict):
        p.append(f"{where}: expected a mapping with at least 'id' and 'kind', got {raw!r}")
        return None
    n0 = len(p)
    p.unknown_keys(raw, _DEVICE_KEYS, where)
    did = _str(p, raw, "id", where)
    if "id" not in raw:
        p.append(f"{where}.id: required")
    kind = _str(p, raw, "kind", where)
    if "kind" not in raw:
        p.append(f"{where}.kind: required (one of {', '.join(KINDS)})")
    kind = _name(p, kind, KINDS, "device kind", f"{where}.kind")
    runner = _name(p, _str(p, raw, "runner", where), runners, "runner", f"{where}.runner")
    transport = _name(p, _str(p, raw, "transport", where), transports, "transport", f"{where}.transport")
    serial, address = _str(p, raw, "serial", where), _str(p, raw, "address", where)
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            p.append(f"{where}.address: expected 'host:port', got {address!r}")
    threads = _int(p, raw, "threads", where, minimum=1)
    affinity = _affinity(p, raw, where)
    host = _str(p, raw, "host", where)
    if host is not None and not HOST_NAME.fullmatch(host):
        p.append(f"{where}.host: expected a host name (letters, digits, '.', '_', '-'; at most 63), got {host!r}")
    profile = raw.get("profile", False)
    if not isinstance(profile, bool):
        p.append(f"{where}.profile: expected true or false, got {profile!r}")
    facts = raw.get("facts") or {}
    if not isinstance(facts, dict):
        p.append(f"{where}.facts: expected a mapping, got {facts!r}")
        facts = {}
    p.unknown_keys(facts, _FACT_KEYS, f"{where}.facts")
    if kind == "android" and not serial and not address:
        p.append(f"{where}: an android device needs 'serial' or 'address' so mpk never benchmarks the wrong phone")
    if len(p) > n0 or did is None or kind is None:
        return None
    return DeviceSpec(
        id=did,
        kind=kind,
        runner=runner or DEFAULT_RUNNER[kind],
        transport=transport or DEFAULT_TRANSPORT[kind],
        serial=serial,
        address=address,
        threads=threads,
        cpu_affinity=affinity,
        facts=dict(facts),
        host=host,
        profile=profile is True,
    )


def parse_device_list(p: Problems, raw: Any, runners: list[str], transports: list[str]) -> list[DeviceSpec]:
    """The ``devices:`` list. ``runners`` and ``transports`` are the names a device may use (the caller's
    registries: this module imports none, so everything may import it)."""
    if not isinstance(raw, list) or not raw:
        p.append(f"devices: expected a non-empty list, got {raw!r}")
        return []
    devices: list[DeviceSpec] = []
    seen: dict[str, int] = {}
    for i, rd in enumerate(raw):
        d = _parse_device(p, rd, f"devices[{i}]", runners, transports)
        if d is None:
            continue
        if d.id in seen:
            p.append(f"devices[{i}].id: duplicate id {d.id!r} (first at devices[{seen[d.id]}])")
            continue
        seen[d.id] = i
        devices.append(d)
    return devices
