"""results.json (``mpk.results/2``): what ``mpk bench`` writes and the gate, the reports and the history read.

One reader, one writer, both schema-checked. Each cell carries a typed :class:`Outcome`, decided by
the bench where the facts are known (did the runner run? did the artifact fail? is there no such
runtime at all?) and read by the gate as a code; nothing downstream parses an error message.

Version 2 (this one) added to version 1:

* ``cells[].outcome`` (required): the typed outcome; ``status`` stays as its coarse form;
* ``matrix`` (required): the device ids and artifact ids the run set out to measure, so a reader can
  tell a missing cell from one that was never planned;
* ``upgraded_from`` (optional): set on a file read from an older version;
* ``cells[].where`` (optional, ``mpk bench --ray`` only): the agent host, Ray node and process that ran the
  cell. A run on one machine writes none, so its files read as before everywhere; a ``--ray`` file needs an
  mpk that knows the key.

Version 1 files are still read: :func:`read_results` upgrades them once, on load. Their outcome comes
from ``status`` and the runner's typed ``error.kind``; the one thing version 1 kept only in prose is a
cell skipped because its runner has no such backend, whose error began ``not applicable:``. That
prefix is read here, for version 1 files only, and nowhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from mpk.contract.runner import ArtifactResult, ErrorKind
from mpk.contract.schema import check
from mpk.errors import SchemaError, UsageError
from mpk.textio import read_json, write_json_atomic

RESULTS_VERSION = "mpk.results/2"
RESULTS_V1 = "mpk.results/1"
#: ``device.model`` of mpk's virtual Android device (runners/vdevice/profile.py): numbers from it are the host's
VIRTUAL_DEVICE_MODEL = "mpk Virtual Device"


class Outcome(StrEnum):
    """What happened to one (device, artifact) cell. The gate maps each to a verdict:

    ========================  =========================================================  ===================
    outcome                   meaning                                                    gate, when budgeted
    ========================  =========================================================  ===================
    ``ok``                    measured                                                   every budget checked
    ``failed``                the runner ran the artifact and it failed                  fail (exit 1)
    ``unsupported``           no runtime for this backend where it ran (CoreML off       warning
                              macOS)
    ``not_applicable``        the runner has no such backend at all; nothing tried       nothing to gate
    ``skipped``               not measured (device absent and not emulated)              inconclusive
    ``infra_error``           no result: the device, transport or runner died            error (exit 4)
    ========================  =========================================================  ===================
    """

    OK = "ok"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"
    NOT_APPLICABLE = "not_applicable"
    SKIPPED = "skipped"
    INFRA_ERROR = "infra_error"

    @property
    def status(self) -> str:
        """The coarse ``status`` a cell with this outcome carries: ok, error or skipped."""
        return _STATUS[self]

    @property
    def has_result(self) -> bool:
        """Whether a cell with this outcome carries a runner's artifact result (else ``result: null``)."""
        return self in (Outcome.OK, Outcome.FAILED, Outcome.UNSUPPORTED)


_STATUS = {
    Outcome.OK: "ok",
    Outcome.FAILED: "error",
    Outcome.UNSUPPORTED: "error",
    Outcome.INFRA_ERROR: "error",
    Outcome.SKIPPED: "skipped",
    Outcome.NOT_APPLICABLE: "skipped",
}


def outcome_of(result: ArtifactResult) -> Outcome:
    """The outcome of a cell whose runner returned ``result`` (ok, unsupported or failed), from its typed kind."""
    if result["status"] == "ok":
        return Outcome.OK
    kind = (result.get("error") or {}).get("kind")
    return Outcome.UNSUPPORTED if kind == ErrorKind.UNSUPPORTED else Outcome.FAILED


class Cell(TypedDict):
    device_id: str
    ran_on: str | None
    emulated: bool
    artifact_id: str
    backend: str
    scheme: str
    status: str
    outcome: str
    error: str | None
    device: dict[str, Any] | None
    settings: dict[str, Any]
    runner: dict[str, Any] | None
    started_utc: str | None
    finished_utc: str | None
    result: ArtifactResult | None
    #: ``mpk bench --ray`` only: {"host", "node_id", "pid"} of the agent that ran it
    where: NotRequired[dict[str, Any]]


class Matrix(TypedDict):
    devices: list[str]
    artifacts: list[str]


class Results(TypedDict, total=False):
    schema_version: str
    run_id: str
    created_utc: str
    finished_utc: str | None
    complete: bool
    manifest: dict[str, Any]
    devices_file: str | None
    config: dict[str, Any]
    environment: dict[str, Any]
    matrix: Matrix | None
    upgraded_from: str
    cells: list[Cell]


def validate_results(doc: Any, *, what: str = "results", error: type = UsageError) -> Results:
    """``doc`` when it is a valid ``mpk.results/2`` document, else ``error`` listing every bad field."""
    check(doc, "results", what=what, error=error)
    return doc  # type: ignore[return-value]


def upgrade(doc: Any, *, what: str = "results") -> Results:
    """A version 2 document from a version 1 or 2 one (a copy; version 2 comes back unchanged)."""
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version != RESULTS_V1:
        return validate_results(doc, what=what)
    check(doc, "results-1", what=what, error=UsageError)
    out = copy.deepcopy(doc)
    out["schema_version"] = RESULTS_VERSION
    out["upgraded_from"] = RESULTS_V1
    out["matrix"] = None
    for cell in out["cells"]:
        cell["outcome"] = str(_v1_outcome(cell))
    return validate_results(out, what=what)


def _v1_outcome(cell: dict[str, Any]) -> Outcome:
    if cell["result"] is not None and cell["status"] != "skipped":
        return outcome_of(cell["result"])
    if cell["status"] == "error":
        return Outcome.INFRA_ERROR
    if cell["status"] == "ok":  # ok without a result: version 1 allowed it; it measured nothing
        return Outcome.INFRA_ERROR
    # version 1 recorded "this runner has no such backend" only in the reason's wording
    return Outcome.NOT_APPLICABLE if str(cell.get("error") or "").startswith("not applicable:") else Outcome.SKIPPED


def read_results(path: Path | str) -> Results:
    """Load, validate and (for an older version) upgrade a results file. Any problem is exit 2, one message."""
    return upgrade(read_json(path, what="results file"), what=f"results file {path}")


def write_results(path: Path | str, doc: Results | dict[str, Any]) -> Path:
    """Validate (a failure is mpk's own bug: SchemaError, exit 4), then write atomically."""
    validate_results(doc, what="results to write", error=SchemaError)
    return write_json_atomic(path, doc)


def iter_cells(results: Results, *, outcome: Outcome | None = None) -> Iterator[Cell]:
    """Every cell, or only those with ``outcome``."""
    for cell in results.get("cells", []):
        if outcome is None or cell["outcome"] == outcome:
            yield cell


def cell_key(cell: Cell | dict[str, Any]) -> tuple[str, str]:
    """(device_id as listed in devices.yaml, artifact_id): the identity the gate and history compare by."""
    return (cell["device_id"], cell["artifact_id"])


def cell_outcome(cell: Cell | dict[str, Any]) -> Outcome:
    return Outcome(cell["outcome"])
