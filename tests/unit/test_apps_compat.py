"""What an artifact needs at run time, and whether a reported runtime can load it (runners/compat.py).

The rules are the runtimes' own, cited in packager/runtime_requirements.py: ExecuTorch's
runtime/COMPATIBILITY.md and Program::load's file-identifier check; ONNX Runtime's model.cc IR/opset checks with
its bundled-ONNX table; coremltools' specification-version table. The tables are checked against the installed
``onnx`` where it publishes its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mpk import runtimes as rr
from mpk.errors import EXIT_USAGE, UsageError
from packager import runtime_requirements as reqs
from runners import compat


def test_onnx_table_is_onnx_s_own() -> None:
    import onnx.helper

    own = {r[0]: tuple(r[1:5]) for r in onnx.helper.VERSION_TABLE}
    for release, row in rr.ONNX_RELEASES.items():
        assert own[release] == row, release
    assert all(onnx in rr.ONNX_RELEASES for onnx in rr.ORT_BUNDLED_ONNX.values())


def test_min_onnxruntime_follows_ir_and_opsets() -> None:
    assert rr.onnx_min_runtime(10, {"": 20}) == "1.18"  # IR 10 came with ONNX 1.16, first bundled by ORT 1.18
    assert rr.onnx_min_runtime(9, {"": 20}) == "1.17"
    assert rr.onnx_min_runtime(8, {"": 17}) == "1.12"
    assert rr.onnx_min_runtime(10, {"": 20, "ai.onnx.ml": 5}) == "1.18"
    assert rr.onnx_min_runtime(11, {"": 23}) is None  # newer than every ORT in the table
    assert rr.onnx_min_runtime(10, {"": 20, "com.microsoft": 1}) == "1.18"  # contrib domains are ORT's own


def test_coreml_spec_versions_map_to_the_os() -> None:
    assert rr.coreml_min_os(7) == {"ios": "16.0", "macos": "13.0"}
    assert rr.coreml_min_os(8) == {"ios": "17.0", "macos": "14.0"}
    assert rr.coreml_min_os(99) is None
    import importlib.util
    import re
    from pathlib import Path

    # coremltools' own table, read from its source (importing it costs seconds)
    src = Path(importlib.util.find_spec("coremltools").origin).read_text()
    own = {int(v): k for k, v in re.findall(r"^_SPECIFICATION_VERSION_IOS_(\d+) = (\d+)$", src, re.M)}
    assert own and all(rr.COREML_SPEC_OS[v][0] == f"{ios}.0" for v, ios in own.items()), own


ET = {"runtime": "executorch", "min_version": "1.4.0", "exported_with": "executorch 1.4.1", "file_identifier": "ET12",
      "program_version": 0}  # fmt: skip


def test_executorch_has_no_forward_compatibility() -> None:
    v = compat.check(ET, {"executorch": "1.3.1"})
    assert v.loadable is False and "1.4.0" in v.message and "1.3.1" in v.message
    assert compat.check(ET, {"executorch": "1.4.1"}).loadable is True
    assert compat.check(ET, {"executorch": "1.4.0"}).loadable is True  # patch releases keep the schema
    assert compat.check(ET, {"executorch": "1.5.0"}).loadable is True  # BC: the next minor loads it
    v = compat.check({**ET, "file_identifier": "ET13"}, {"executorch": "1.4.1"})
    assert v.loadable is False and "ET13" in v.message


ORT = {"runtime": "onnxruntime", "min_version": "1.18", "ir_version": 10, "opsets": {"": 20, "ai.onnx.ml": 5}}


@pytest.mark.parametrize(
    ("have", "loadable"),
    [("1.17.3", False), ("1.18.0", True), ("1.20.1", True), ("1.24.3", True), ("1.31.1", True), ("1.9.0", False)],
)
def test_onnxruntime_versions(have: str, loadable: bool) -> None:
    v = compat.check(ORT, {"onnxruntime": have})
    assert v.loadable is loadable, v.message
    assert have in v.message


def test_onnxruntime_beyond_the_table_is_unknown_not_refused() -> None:
    need = {"runtime": "onnxruntime", "min_version": None, "ir_version": 11, "opsets": {"": 23}}
    assert compat.check(need, {"onnxruntime": "1.20.0"}).loadable is False  # the table says 1.20 cannot
    assert compat.check(need, {"onnxruntime": "1.26.0"}).loadable is None  # newer: mpk cannot say


def test_coreml_needs_the_os_of_its_spec() -> None:
    need = {"runtime": "coreml", "min_version": "17.0", "min_macos": "14.0", "spec_version": 8}
    assert compat.check(need, {"coreml": "ios 16.7"}).loadable is False
    assert compat.check(need, {"coreml": "ios 17.4"}).loadable is True
    assert compat.check(need, {"coreml": "macos 13.6"}).loadable is False
    assert compat.check(need, {"coreml": "macos 14.2"}).loadable is True


def test_unknown_is_never_refused() -> None:
    assert compat.check(None, {"executorch": "1.0.0"}).loadable is None
    assert compat.check(ET, {"onnxruntime": "1.24.3"}).loadable is None
    assert compat.check(ET, None).loadable is None


def test_app_version_name_from_dumpsys() -> None:
    dumpsys = (
        "Packages:\n  Package [org.mpk.bench] (5b1d7e2):\n    userId=10234\n"
        "    versionCode=1 minSdk=26 targetSdk=35\n    versionName=0.1.0 (executorch 1.4.1; onnxruntime 1.24.3)\n"
    )
    assert compat.parse_app_version_name(dumpsys) == {"executorch": "1.4.1", "onnxruntime": "1.24.3"}
    assert compat.parse_app_version_name("    versionName=0.1.0\n") is None  # an app built before mpk said
    assert compat.parse_app_version_name("Unable to find package: org.mpk.bench\n") is None


@dataclass
class _Dev:
    id: str
    runner: str = "android_app"


@dataclass
class _Plan:
    device: _Dev
    target: _Dev | None
    emulated: bool = False


def test_refusal_names_every_device_artifact_and_both_versions() -> None:
    arts = [{"id": "executorch-int8", "runtime": ET}, {"id": "onnx-int8", "runtime": ORT}]
    phones = {"old-phone": {"executorch": "1.3.1", "onnxruntime": "1.17.0"}, "new-phone": {"executorch": "1.4.1",
              "onnxruntime": "1.24.3"}}  # fmt: skip
    plans = [_Plan(_Dev(i), _Dev(i)) for i in phones] + [_Plan(_Dev("absent"), None)]
    with pytest.raises(UsageError) as e:
        compat.refuse_incompatible(plans, arts, report=lambda d: phones[d.id])
    msg = e.value.format_message()
    assert e.value.exit_code == EXIT_USAGE and "nothing was pushed" in msg
    assert "old-phone: executorch-int8:" in msg and "1.3.1" in msg and "1.4.0" in msg
    assert "old-phone: onnx-int8:" in msg and "1.17.0" in msg and "1.18" in msg
    assert "new-phone" not in msg
    compat.refuse_incompatible(plans[1:], arts, report=lambda d: phones[d.id])  # the new phone alone passes
    compat.refuse_incompatible(plans, arts, report=lambda d: None)  # nobody reports: nothing refused


class _Shell:
    """Stands in for a phone with the app installed (cannot exist here): answers `dumpsys package` like Android."""

    def __init__(self, out: str, code: int = 0) -> None:
        self.out, self.code, self.calls = out, code, []

    def shell(self, cmd: str, timeout: float = 0):
        self.calls.append(cmd)
        return type("R", (), {"stdout": self.out, "exit_code": self.code})()


def test_android_app_runtimes_asks_the_package_manager() -> None:
    t = _Shell("    versionName=0.1.0 (executorch 1.3.1; onnxruntime 1.24.3)\n")
    assert compat.android_app_runtimes(t) == {"executorch": "1.3.1", "onnxruntime": "1.24.3"}
    assert t.calls == ["dumpsys package org.mpk.bench"]
    assert compat.android_app_runtimes(_Shell("", code=1)) is None


def test_pte_reader_reads_the_header_and_refuses_garbage(tmp_path) -> None:
    import struct

    # a minimal flatbuffer: root table at 16, its vtable at 8 (field 0 at +4), Program.version = 7
    buf = bytearray(struct.pack("<I", 16) + b"ET12" + struct.pack("<HHH", 6, 8, 4) + b"\0\0" + struct.pack("<i", 8)
                    + struct.pack("<I", 7))  # fmt: skip
    p = tmp_path / "m.pte"
    p.write_bytes(bytes(buf))
    assert reqs.read_pte(p) == {"file_identifier": "ET12", "program_version": 7}
    short = tmp_path / "short.pte"
    short.write_bytes(b"ET")
    with pytest.raises(UsageError):
        reqs.read_pte(short)
    bad = tmp_path / "bad.mlmodel"
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(UsageError, match="specificationVersion"):
        reqs.read_coreml(bad)


def test_read_onnx_reads_the_wire_like_onnx_does(tmp_path) -> None:
    """The manifest's ONNX requirement is read without importing onnx (cached re-runs import no runtime)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=8, producer_name="mpk-test", producer_version="1.2"
    )
    p = tmp_path / "m.onnx"
    onnx.save(model, str(p))
    got = reqs.read_onnx(p)
    assert got == {"ir_version": 8, "opsets": {"": 17, "com.microsoft": 1}, "exported_with": "mpk-test 1.2"}
    (tmp_path / "bad.onnx").write_bytes(p.read_bytes()[:40])  # truncated inside the graph field
    with pytest.raises(UsageError, match="not an ONNX model"):
        reqs.read_onnx(tmp_path / "bad.onnx")
