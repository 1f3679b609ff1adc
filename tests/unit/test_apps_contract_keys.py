"""The apps' JSON keys are checked against the ONE source of the contract: the JSON Schemas.

Both apps keep every key they write in ``ResultKeys`` and every key they read in
``SpecKeys`` (one nested object/enum per schema object). This test extracts
those literals from the Kotlin and Swift sources and requires them to be
EXACTLY the schema's property names (result) or a subset of them (spec).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KOTLIN = ROOT / "android_app/app/src/main/java/org/mpk/bench/contract/Keys.kt"
SWIFT = ROOT / "ios_app/Sources/BenchmarkCore/Keys.swift"
RESULT = json.loads((ROOT / "mpk/contract/schemas/runner_result.schema.json").read_text())
SPEC = json.loads((ROOT / "mpk/contract/schemas/runner_spec.schema.json").read_text())

# nested block name -> the schema object it mirrors
RESULT_BLOCKS = {
    "Top": RESULT,
    "Runner": RESULT["properties"]["runner"],
    "Runtimes": RESULT["properties"]["runner"]["properties"]["runtimes"],
    "Settings": RESULT["properties"]["settings"],
    "Device": RESULT["$defs"]["device_facts"],
    "Int8Kernel": RESULT["$defs"]["device_facts"]["properties"]["int8_kernel"],
    "Artifact": RESULT["$defs"]["artifact_result"],
    "Error": RESULT["$defs"]["artifact_result"]["properties"]["error"],
    "Stats": RESULT["$defs"]["stats"],
    "Memory": RESULT["$defs"]["artifact_result"]["properties"]["memory"],
    "Accuracy": RESULT["$defs"]["artifact_result"]["properties"]["accuracy"],
    "Profile": RESULT["$defs"]["profile"],
    "ProfileOp": RESULT["$defs"]["profile_op"],
}
SPEC_BLOCKS = {
    "Top": SPEC,
    "Settings": SPEC["properties"]["settings"],
    "Reference": SPEC["properties"]["reference"],
    "TensorFile": SPEC["$defs"]["tensor_file"],
    "Artifact": SPEC["properties"]["artifacts"]["items"],
    "Runtime": SPEC["properties"]["artifacts"]["items"]["properties"]["runtime"],
    "TensorSpec": SPEC["$defs"]["tensor_spec"],
}
_LITERAL = {"kotlin": re.compile(r'const val (\w+) = "([^"]*)"'), "swift": re.compile(r'static let (\w+) = "([^"]*)"')}
_OPEN = {"kotlin": r"object {name} \{{", "swift": r"enum {name} \{{"}


def _block(text: str, start: int) -> str:
    """The text between the brace at/after ``start`` and its matching close brace."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    raise AssertionError("unbalanced braces")


def extract(path: Path, lang: str, outer: str) -> dict[str, set[str]]:
    """{nested block name: its key literals} inside ``outer`` (constant *values* ending in _VALUE excluded)."""
    text = path.read_text()
    body = _block(text, re.search(_OPEN[lang].format(name=outer), text).start())
    out = {}
    for m in re.finditer(_OPEN[lang].format(name=r"(\w+)"), body):
        out[m.group(1)] = {v for _, v in _LITERAL[lang].findall(_block(body, m.start()))}
    return out


def props(schema_obj: dict) -> set[str]:
    return set(schema_obj["properties"])


@pytest.mark.parametrize(("path", "lang"), [(KOTLIN, "kotlin"), (SWIFT, "swift")])
def test_result_keys_are_exactly_the_schema(path: Path, lang: str) -> None:
    found = extract(path, lang, "ResultKeys")
    assert set(found) == set(RESULT_BLOCKS), "one nested block per schema object"
    for name, obj in RESULT_BLOCKS.items():
        assert found[name] == props(obj), f"{lang} ResultKeys.{name} differs from the schema"


@pytest.mark.parametrize(("path", "lang"), [(KOTLIN, "kotlin"), (SWIFT, "swift")])
def test_spec_keys_exist_in_the_spec_schema(path: Path, lang: str) -> None:
    found = extract(path, lang, "SpecKeys")
    assert set(found) == set(SPEC_BLOCKS)
    for name, obj in SPEC_BLOCKS.items():
        assert found[name] <= props(obj), f"{lang} SpecKeys.{name} reads keys the spec schema lacks"
        assert set(obj.get("required", [])) <= found[name], f"{lang} SpecKeys.{name} ignores a required key"


def test_schema_version_constants_match() -> None:
    kt, sw = KOTLIN.read_text(), SWIFT.read_text()
    for value in (RESULT["properties"]["schema_version"]["const"], SPEC["properties"]["schema_version"]["const"]):
        assert f'"{value}"' in kt and f'"{value}"' in sw


def test_writers_use_no_key_outside_result_keys() -> None:
    """A quoted snake_case key in the writer code would escape the check above."""
    writer = (ROOT / "android_app/app/src/main/java/org/mpk/bench/contract/Result.kt").read_text()
    stray = set(re.findall(r'"([a-z]+_[a-z0-9_]+)"\s+to\b', writer))
    assert not stray, f"keys written without ResultKeys: {stray}"
    assert (
        "ResultKeys.Stats.P90_MS"
        in (ROOT / "android_app/app/src/main/java/org/mpk/bench/contract/Stats.kt").read_text()
    )


def test_app_runners_must_report_their_runtimes() -> None:
    """runner_result.schema.json requires the apps' linked runtime versions in every result."""
    from mpk.contract import problems as schema_problems

    base = {"schema_version": "mpk.runner-result/1", "run_id": "r", "device_id": "d", "emulated": False,
            "device": {"model": "m", "abi": "arm64-v8a", "os": "android", "cores": 8},
            "settings": {"threads": 1, "warmup_iterations": 0, "min_iterations": 1, "min_seconds": 0.0},
            "started_utc": "2026-01-01T00:00:00Z", "finished_utc": "2026-01-01T00:00:01Z", "artifacts": []}  # fmt: skip
    android = {**base, "runner": {"name": "android_app", "version": "0.1.0",
                                  "runtimes": {"executorch": "1.4.1", "onnxruntime": "1.24.3"}}}  # fmt: skip
    ios = {**base, "runner": {"name": "ios_app", "version": "0.1.0",
                              "runtimes": {"executorch": "1.4.1", "coreml": "ios 17.4"}}}  # fmt: skip
    assert schema_problems(android, "runner_result") == [] and schema_problems(ios, "runner_result") == []
    del android["runner"]["runtimes"]["onnxruntime"]
    del ios["runner"]["runtimes"]
    assert any("onnxruntime" in p for p in schema_problems(android, "runner_result"))
    assert any("runtimes" in p for p in schema_problems(ios, "runner_result"))
    host = {**base, "runner": {"name": "host", "version": "0.1"}}  # other runners may omit them
    assert schema_problems(host, "runner_result") == []
