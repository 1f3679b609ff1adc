"""mpk's file formats, each with one typed reader and one writer, checked against its JSON Schema.

=====================  ==========================  =================================  ========================
file                   version                     reader / writer                    schema
=====================  ==========================  =================================  ========================
manifest.json          ``mpk.manifest/1``          read_manifest / write_manifest     manifest.schema.json
runner spec            ``mpk.runner-spec/1``       read_spec / write_spec             runner_spec.schema.json
runner result          ``mpk.runner-result/1``     read_result / write_result         runner_result.schema.json
results.json           ``mpk.results/2`` (reads 1)  read_results / write_results       results.schema.json
=====================  ==========================  =================================  ========================

Both halves (packager, runners) and the apps' tests use these; nothing else in the tree parses the
files. A user's file that fails its schema is a usage error (exit 2) listing each bad field with its
path; a runner's output or a document mpk is about to write that fails is a SchemaError (exit 4).
"""

from mpk.contract.manifest import (
    MANIFEST_VERSION,
    Manifest,
    ManifestArtifact,
    artifact_ids,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from mpk.contract.results import (
    RESULTS_V1,
    RESULTS_VERSION,
    VIRTUAL_DEVICE_MODEL,
    Cell,
    Matrix,
    Outcome,
    Results,
    cell_key,
    cell_outcome,
    iter_cells,
    outcome_of,
    read_results,
    upgrade,
    validate_results,
    write_results,
)
from mpk.contract.runner import (
    RESULT_VERSION,
    SPEC_VERSION,
    ArtifactResult,
    ErrorKind,
    RunnerResult,
    RunnerSpec,
    parse_result,
    read_result,
    read_spec,
    validate_result,
    validate_spec,
    write_result,
    write_spec,
)
from mpk.contract.schema import SCHEMA_DIR, json_path, problems, schema_path

__all__ = [
    "MANIFEST_VERSION",
    "RESULTS_V1",
    "RESULTS_VERSION",
    "RESULT_VERSION",
    "SCHEMA_DIR",
    "SPEC_VERSION",
    "VIRTUAL_DEVICE_MODEL",
    "ArtifactResult",
    "Cell",
    "ErrorKind",
    "Manifest",
    "ManifestArtifact",
    "Matrix",
    "Outcome",
    "Results",
    "RunnerResult",
    "RunnerSpec",
    "artifact_ids",
    "cell_key",
    "cell_outcome",
    "iter_cells",
    "json_path",
    "outcome_of",
    "parse_result",
    "problems",
    "read_manifest",
    "read_result",
    "read_results",
    "read_spec",
    "schema_path",
    "upgrade",
    "validate_manifest",
    "validate_result",
    "validate_results",
    "validate_spec",
    "write_manifest",
    "write_result",
    "write_results",
    "write_spec",
]
