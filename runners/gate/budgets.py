"""Budgets: the limits a release must stay inside, read from the ``budgets:`` list of devices.yaml.

A rule names which cells it covers and the limits it sets::

    budgets:
      - device: "*"              # every real device (exact id, glob like "pixel-*", or "*")
        artifact: "*-int8"       # glob on artifact ids such as "executorch-int8"
        p90_ms: 40               # the 90th percentile must be under 40 ms (with 95% confidence)
        peak_mem_mb: 200
        accuracy: {top1_agreement_min: 0.98, cosine_min: 0.99}
      - device: pixel-7
        artifact: executorch-int8
        p90_ms: 25               # tighter for this pair: the most specific rule wins

Precedence, per metric (each metric is resolved on its own, so a narrow rule
can tighten ``p90_ms`` and leave ``peak_mem_mb`` to a broad one):

1. device: an exact id beats a glob, which beats ``"*"``;
2. then artifact: exact beats glob beats ``"*"``;
3. then model: exact beats glob beats ``"*"``;
4. then a rule that names ``emulated: true|false`` beats ``emulated: any``;
5. on a full tie the rule listed later wins.

``emulated`` defaults to false: budgets are written for real phones, and a
number measured on the host CPU standing in for a phone must not pass (or fail)
a phone's budget by accident. A rule must say ``emulated: true`` (or ``any``)
to gate emulated cells.

Unknown keys are errors: a misspelt ``p90ms`` must never switch a gate off.

A pure parser: it reads no file and imports nothing of ``runners``. :mod:`runners.config`
reads devices.yaml (or a budgets-only file) through the duplicate-key-refusing YAML loader
and hands the ``budgets:`` list in.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from mpk.registry import suggest

#: Metrics with a maximum (smaller is better). Units are in the names.
MAX_METRICS: tuple[str, ...] = ("p50_ms", "p90_ms", "p99_ms", "load_ms", "first_inference_ms", "peak_mem_mb", "size_mb")
#: Accuracy floors (bigger is better), keyed as written under ``accuracy:``.
ACCURACY_KEYS: tuple[str, ...] = ("top1_agreement_min", "cosine_min", "snr_db_min")
#: Every metric name a resolved budget may carry; accuracy floors are prefixed.
ALL_METRICS: tuple[str, ...] = MAX_METRICS + tuple(f"accuracy.{k}" for k in ACCURACY_KEYS)

_SELECTORS = ("device", "model", "artifact", "emulated")
_KNOWN_KEYS = (*_SELECTORS, *MAX_METRICS, "accuracy")


def _rank(pattern: str) -> int:
    """2 for an exact name, 1 for a glob, 0 for ``"*"`` (the match-everything wildcard)."""
    if pattern == "*":
        return 0
    return 1 if any(c in pattern for c in "*?[") else 2


def matches(pattern: str, value: str | None) -> bool:
    """Whether a selector (exact name, glob, or ``"*"``) matches ``value``."""
    if pattern == "*":
        return True
    return value is not None and fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True)
class BudgetRule:
    """One entry of ``budgets:``. ``emulated`` is True, False, or None for "any"."""

    device: str = "*"
    model: str = "*"
    artifact: str = "*"
    emulated: bool | None = False
    #: metric name (see :data:`ALL_METRICS`) -> limit
    limits: dict[str, float] = field(default_factory=dict)
    #: position in the list, for tie-breaking and for messages ("budgets[3]")
    index: int = 0

    def applies(self, *, device: str, artifact: str, model: str | None, emulated: bool) -> bool:
        if self.emulated is not None and self.emulated != emulated:
            return False
        return self.names(device=device, artifact=artifact, model=model)

    def names(self, *, device: str, artifact: str, model: str | None) -> bool:
        """Whether the selectors match this cell, real or emulated alike."""
        return matches(self.device, device) and matches(self.artifact, artifact) and matches(self.model, model)

    def specificity(self) -> tuple[int, int, int, int, int]:
        return (_rank(self.device), _rank(self.artifact), _rank(self.model), int(self.emulated is not None), self.index)

    def label(self) -> str:
        emu = {True: "emulated", False: "real", None: "any"}[self.emulated]
        return f"budgets[{self.index}] (device={self.device}, artifact={self.artifact}, model={self.model}, {emu})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "device": self.device,
            "model": self.model,
            "artifact": self.artifact,
            "emulated": "any" if self.emulated is None else self.emulated,
            "limits": dict(self.limits),
        }


@dataclass(frozen=True)
class ResolvedBudget:
    """The winning limit for one metric of one cell, and the rule it came from."""

    metric: str
    limit: float
    rule: BudgetRule


def resolve(
    rules: list[BudgetRule], *, device: str, artifact: str, model: str | None, emulated: bool
) -> dict[str, ResolvedBudget]:
    """Per metric, the limit of the most specific applicable rule (see the module docstring)."""
    best: dict[str, ResolvedBudget] = {}
    for rule in rules:
        if not rule.applies(device=device, artifact=artifact, model=model, emulated=emulated):
            continue
        for metric, limit in rule.limits.items():
            cur = best.get(metric)
            if cur is None or rule.specificity() >= cur.rule.specificity():
                best[metric] = ResolvedBudget(metric, limit, rule)
    return {m: best[m] for m in ALL_METRICS if m in best}


def _positive(value: Any, path: str, problems: list[str]) -> float | None:
    # bool is an int in Python; "p90_ms: yes" is a mistake, not 1 ms
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.append(f"{path}: expected a positive number, got {value!r}")
        return None
    if not value > 0 or value != value or value == float("inf"):
        problems.append(f"{path}: expected a positive number, got {value!r}")
        return None
    return float(value)


def _selector(value: Any, path: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{path}: expected a name or glob (string), got {value!r}")
        return None
    return value


def parse_budgets(raw: Any, where: str = "budgets") -> tuple[list[BudgetRule], list[str]]:
    """Parse the ``budgets:`` list. Returns (rules, problems); every problem carries its path.

    ``parse_budgets([{"device": "pixel-7", "p90ms": 3}], "budgets")`` returns no
    rules and the problem ``budgets[0].p90ms: unknown key 'p90ms'; did you mean
    'p90_ms'? known: ...``. Callers that own the whole file
    (devices.yaml) merge the problems into one :class:`~mpk.errors.ConfigError`.
    """
    problems: list[str] = []
    rules: list[BudgetRule] = []
    if raw is None:
        return rules, problems
    if not isinstance(raw, list):
        return rules, [f"{where}: expected a list of budget rules, got {type(raw).__name__}"]
    for i, item in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{path}: expected a mapping, got {type(item).__name__}")
            continue
        n_before = len(problems)
        sel: dict[str, Any] = {"device": "*", "model": "*", "artifact": "*", "emulated": False}
        limits: dict[str, float] = {}
        for key, value in item.items():
            kpath = f"{path}.{key}"
            if key not in _KNOWN_KEYS:
                problems.append(f"{kpath}: {suggest(str(key), list(_KNOWN_KEYS), 'key')}")
            elif key in ("device", "model", "artifact"):
                sel[key] = _selector(value, kpath, problems)
            elif key == "emulated":
                if value is True or value is False:
                    sel[key] = value
                elif value == "any":
                    sel[key] = None
                else:
                    problems.append(f"{kpath}: expected true, false or 'any', got {value!r}")
            elif key == "accuracy":
                if not isinstance(value, dict):
                    problems.append(f"{kpath}: expected a mapping of {', '.join(ACCURACY_KEYS)}, got {value!r}")
                    continue
                for akey, avalue in value.items():
                    apath = f"{kpath}.{akey}"
                    if akey not in ACCURACY_KEYS:
                        problems.append(f"{apath}: {suggest(str(akey), list(ACCURACY_KEYS), 'accuracy key')}")
                        continue
                    v = _positive(avalue, apath, problems)
                    if v is not None:
                        if akey != "snr_db_min" and v > 1:
                            problems.append(f"{apath}: a fraction must be in (0, 1], got {avalue!r}")
                        else:
                            limits[f"accuracy.{akey}"] = v
            else:
                v = _positive(value, kpath, problems)
                if v is not None:
                    limits[key] = v
        if not limits and len(problems) == n_before:
            problems.append(f"{path}: sets no limit (give at least one of {', '.join(MAX_METRICS)} or accuracy)")
        if len(problems) == n_before:
            rules.append(BudgetRule(limits=limits, index=i, **sel))
    return rules, problems
