"""The package manifest (``mpk.manifest/1``): the one reader and the one writer.

``mpk package`` writes it, ``mpk inspect``, ``mpk bench`` and the gate read it: backend, scheme,
paths, hashes and IO live here, never in file names. Both directions are checked against
``schemas/manifest.schema.json``: a manifest on disk is always schema-valid, and a hand-edited one
that is not is refused with the path of each bad field (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from mpk.contract.schema import check
from mpk.errors import SchemaError, UsageError
from mpk.textio import read_json, write_text_atomic

MANIFEST_VERSION = "mpk.manifest/1"


class TensorSpec(TypedDict):
    name: str
    shape: list[int | str]
    dtype: str
    dynamic: NotRequired[dict[str, list[int]]]


class ManifestArtifact(TypedDict):
    id: str
    backend: str
    scheme: str
    path: str
    sha256: str
    size_bytes: int
    compressed_size_bytes: int
    extra_files: list[Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    delegation: dict[str, Any] | None
    op_summary: dict[str, Any]
    verification: dict[str, Any]


class Manifest(TypedDict):
    schema_version: str
    mpk_version: str
    created_utc: str
    model: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    recipe: dict[str, Any]
    data: dict[str, Any]
    reference: dict[str, Any] | None
    artifacts: list[ManifestArtifact]
    failures: list[dict[str, Any]]
    environment: dict[str, Any]


def validate_manifest(doc: Any, *, what: str = "manifest", error: type = UsageError) -> Manifest:
    """``doc`` itself when it is a valid manifest; else ``error`` listing every bad field with its path."""
    check(doc, "manifest", what=what, error=error)
    return doc  # type: ignore[return-value]


def read_manifest(path: Path | str) -> Manifest:
    """Load and validate ``path`` (a manifest.json). Any problem is one UsageError (exit 2)."""
    return validate_manifest(read_json(path, what="manifest"), what=f"manifest {path}")


def write_manifest(path: Path | str, manifest: Manifest | dict[str, Any]) -> Path:
    """Validate (a failure is mpk's own bug: SchemaError, exit 4), then write atomically."""
    validate_manifest(manifest, what="manifest to write", error=SchemaError)
    return write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def artifact_ids(manifest: Manifest) -> list[str]:
    return [a["id"] for a in manifest["artifacts"]]
