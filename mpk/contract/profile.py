"""Profiles and op maps: the per-operator table a runner adds to its result, and the package's op map.

=========================  ====================  ==============================  ================================
what                       version               reader / writer                 schema
=========================  ====================  ==============================  ================================
a runner's profile         (runner-result/1)     :class:`Profile`                runner_result.schema.json
                                                                                 ``$defs.profile``
op map (package file)      ``mpk.opmap/1``       read_opmap / write_opmap        opmap.schema.json
Chrome trace of a profile  Trace Event Format    write_trace                     (Chrome's; ``"ph": "X"`` events)
=========================  ====================  ==============================  ================================

The numbers in a profile are defined once in :mod:`mpk.profiling`; this module only types, checks and
writes the documents.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from mpk.contract.schema import check
from mpk.errors import SchemaError, UsageError
from mpk.textio import read_json, write_text_atomic

OPMAP_VERSION = "mpk.opmap/1"


class ProfileStatus(StrEnum):
    """How a profile's per-op figures were obtained; every table labels its rows with it."""

    #: the runtime timed each op itself (ONNX Runtime's per-node ``_kernel_time`` events)
    MEASURED = "measured"
    #: a substitute, labelled as one: each unit's subgraph lowered and timed on its own (ExecuTorch without
    #: an event tracer); it ignores fusion and cache effects across units
    ESTIMATED = "estimated"
    #: no per-op figure this runtime can give; ``limits`` say why
    UNAVAILABLE = "unavailable"


class ProfileOp(TypedDict):
    name: str
    op_type: str
    calls: int
    total_ms: float
    mean_ms: float
    share: float
    provider: NotRequired[str | None]
    delegated: NotRequired[bool | None]
    module: NotRequired[str | None]
    unit: NotRequired[str | None]
    source: NotRequired[dict[str, str] | None]
    estimated: NotRequired[bool]
    op_counts: NotRequired[dict[str, int]]
    delegated_ops: NotRequired[int]


class Profile(TypedDict):
    status: str
    method: str
    ops: list[ProfileOp]
    granularity: NotRequired[str]
    runtime: NotRequired[str | None]
    kernel: NotRequired[str | None]
    runs: NotRequired[int]
    per_run_ms: NotRequired[float | None]
    profiled_ms: NotRequired[float | None]
    unprofiled_p50_ms: NotRequired[float | None]
    unprofiled_mean_ms: NotRequired[float | None]
    vs_p50: NotRequired[float | None]
    overhead: NotRequired[float | None]
    attributed_share: NotRequired[float | None]
    source_map: NotRequired[str | None]
    limits: NotRequired[list[str]]
    notes: NotRequired[list[str]]


def unavailable(method: str, *limits: str, runtime: str | None = None) -> Profile:
    """A profile that says what could not be measured, and why (never an empty table posing as a result)."""
    return {"status": ProfileStatus.UNAVAILABLE.value, "method": method, "runtime": runtime, "ops": [], "runs": 0,
            "limits": list(limits)}  # fmt: skip


def finish(profile: Profile, *, p50_ms: float | None, mean_ms: float | None) -> Profile:
    """Fill the comparison with the unprofiled timed loop (its stats' p50 and mean): per-run op total, vs_p50,
    overhead and the attributed share. The timed samples are only read, never changed: the profile is a
    separate pass.
    """
    from mpk.profiling import attributed_share, per_run_ms

    profile["per_run_ms"] = per_run_ms(profile)
    profile["unprofiled_p50_ms"] = p50_ms
    profile["unprofiled_mean_ms"] = mean_ms
    if p50_ms:
        if profile["per_run_ms"] is not None:
            profile["vs_p50"] = profile["per_run_ms"] / p50_ms - 1
        if profile.get("profiled_ms") is not None:
            profile["overhead"] = float(profile["profiled_ms"] or 0.0) / p50_ms - 1
    if profile["ops"]:
        profile["attributed_share"] = attributed_share(profile)
    return profile


# ---------------------------------------------------------------- op map


def validate_opmap(doc: Any, *, what: str = "op map", error: type = UsageError) -> dict[str, Any]:
    check(doc, "opmap", what=what, error=error)
    return doc  # type: ignore[no-any-return]


def read_opmap(path: Path | str) -> dict[str, Any]:
    """Load and validate an op map; a missing, corrupt or invalid file is one UsageError (exit 2)."""
    return validate_opmap(read_json(path, what="op map"), what=f"op map {path}")


def write_opmap(path: Path | str, doc: dict[str, Any]) -> Path:
    validate_opmap(doc, what="op map to write", error=SchemaError)
    return write_text_atomic(path, json.dumps(doc, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- Chrome trace


def write_trace(path: Path | str, profile: Profile | dict[str, Any], *, process: str) -> Path:
    """Write ``profile`` as Chrome trace JSON (:func:`mpk.profiling.chrome_trace`): Perfetto and chrome://tracing
    open it."""
    from mpk.profiling import chrome_trace

    return write_text_atomic(path, json.dumps(chrome_trace(profile, process=process)) + "\n")
