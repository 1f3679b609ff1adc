"""The runner contract: one JSON spec in (``mpk.runner-spec/1``), one JSON result out (``mpk.runner-result/1``).

Every runner speaks these two documents: the host runner, mpk's virtual device, the Android and
iOS apps, the native C++ tools. Both ends validate, so a runner that drifts from the contract fails
loudly with the path of the bad field (``artifacts[0].sha256: 'abc' does not match '^[0-9a-f]{64}$'``)
instead of feeding a wrong number to the gate. A spec or result that fails its schema is an
infrastructure error (exit 4): the user did not write it, a runner did.

A failed artifact says why with a typed ``error.kind`` (:class:`ErrorKind`), never only in prose.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from mpk.contract.schema import check
from mpk.errors import SchemaError
from mpk.textio import read_json, write_text_atomic

SPEC_VERSION = "mpk.runner-spec/1"
RESULT_VERSION = "mpk.runner-result/1"


class ErrorKind(StrEnum):
    """Why a runner could not measure an artifact (``artifact_result.error.kind``)."""

    LOAD = "load"
    INFERENCE = "inference"
    OOM = "oom"
    #: the runtime for this backend is not on the machine that ran it (CoreML off macOS)
    UNSUPPORTED = "unsupported"
    TIMEOUT = "timeout"
    CRASH = "crash"
    OTHER = "other"


class RunSettings(TypedDict):
    threads: int
    cpu_affinity: NotRequired[list[int] | None]
    warmup_iterations: int
    min_iterations: int
    min_seconds: float
    max_seconds: NotRequired[float | None]


class SpecArtifact(TypedDict):
    id: str
    backend: str
    scheme: str
    path: str
    sha256: str
    extra_files: NotRequired[list[str]]
    inputs: NotRequired[list[dict[str, Any]]]
    outputs: NotRequired[list[dict[str, Any]]]


class RunnerSpec(TypedDict):
    schema_version: str
    run_id: str
    device_id: str
    settings: RunSettings
    reference: NotRequired[dict[str, Any] | None]
    artifacts: list[SpecArtifact]


class ArtifactError(TypedDict):
    kind: str
    message: str


class ArtifactResult(TypedDict):
    id: str
    backend: str
    scheme: str
    status: str
    error: NotRequired[ArtifactError | None]
    load_ms: NotRequired[float | None]
    first_inference_ms: NotRequired[float | None]
    warmup_iterations: NotRequired[int]
    iterations: NotRequired[int]
    samples_ms: NotRequired[list[float]]
    stats: NotRequired[dict[str, Any] | None]
    memory: NotRequired[dict[str, Any] | None]
    accuracy: NotRequired[dict[str, Any] | None]


class RunnerResult(TypedDict):
    schema_version: str
    run_id: str
    device_id: str
    runner: dict[str, Any]
    emulated: bool
    device: dict[str, Any]
    settings: RunSettings
    started_utc: str
    finished_utc: str
    artifacts: list[ArtifactResult]


def validate_spec(doc: Any, *, what: str = "runner spec") -> RunnerSpec:
    check(doc, "runner_spec", what=what, error=SchemaError)
    return doc  # type: ignore[return-value]


def read_spec(path: Path | str) -> RunnerSpec:
    return validate_spec(read_json(path, what="runner spec", error=SchemaError), what=f"runner spec {path}")


def write_spec(path: Path | str, spec: RunnerSpec | dict[str, Any]) -> Path:
    validate_spec(spec, what="runner spec to write")
    return write_text_atomic(path, json.dumps(spec, indent=1) + "\n")


def validate_result(doc: Any, *, what: str = "runner result") -> RunnerResult:
    check(doc, "runner_result", what=what, error=SchemaError)
    return doc  # type: ignore[return-value]


def read_result(path: Path | str) -> RunnerResult:
    return validate_result(read_json(path, what="runner result", error=SchemaError), what=f"runner result {path}")


def parse_result(text: str, *, what: str = "runner result") -> RunnerResult:
    """A runner result that arrived as text (``run-as ... cat result.json`` over adb), validated like a file."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{what} is not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    return validate_result(doc, what=what)


def write_result(path: Path | str, result: RunnerResult | dict[str, Any]) -> Path:
    validate_result(result, what="runner result to write")
    return write_text_atomic(path, json.dumps(result, indent=1) + "\n")
