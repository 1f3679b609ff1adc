"""`mpk bench` refuses, before it pushes or writes anything, an artifact the device's runtime cannot load.

Real artifacts (a tiny conv net exported to .onnx and .pte by torch / ExecuTorch, cached) have their run-time
requirement read by packager/runtime_requirements.py; the host device reports its real runtimes (the installed
executorch / onnxruntime wheels). A manifest needing a newer ExecuTorch than the device has is refused through
the CLI with exit 2 naming both versions, and nothing is staged or written; the same manifest with its true
requirement benchmarks normally. mpk's virtual device serves no package-manager dump, so it reports nothing and
is never refused (the app checks again before loading).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mpk.cli import main
from packager.runtime_requirements import requirements

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tiny_package(tmp_path_factory.mktemp("pkg"))
    m = json.loads(path.read_text())
    for a in m["artifacts"]:
        a["runtime"] = requirements(a["backend"], path.parent / a["path"])
    path.write_text(json.dumps(m))
    return path


def _devices(tmp: Path, *devices: dict) -> Path:
    f = tmp / "devices.yaml"
    fast = {"warmup_iterations": 1, "min_iterations": 3, "min_seconds": 0.0, "cooldown_s": 0}
    f.write_text(yaml.safe_dump({"version": 1, "defaults": fast, "devices": list(devices)}))
    return f


def test_requirements_read_from_real_artifacts(pkg: Path) -> None:
    arts = {a["backend"]: a["runtime"] for a in json.loads(pkg.read_text())["artifacts"]}
    et, ort = arts["executorch"], arts["onnx"]
    assert et["file_identifier"] == "ET12" and et["program_version"] == 0
    installed = metadata.version("executorch")
    assert et["min_version"] == ".".join(installed.split(".")[:2]) + ".0" and installed in et["exported_with"]
    assert ort["runtime"] == "onnxruntime" and ort["ir_version"] >= 7 and ort["opsets"][""] >= 7
    assert ort["min_version"] is not None


def test_bench_refuses_a_newer_executorch_before_anything_is_pushed(pkg: Path, tmp_path: Path) -> None:
    m = json.loads(pkg.read_text())
    et = next(a for a in m["artifacts"] if a["backend"] == "executorch")
    et["runtime"]["min_version"] = "9.1.0"  # as if exported by an ExecuTorch the host does not have
    newer = pkg.parent / "manifest-newer.json"
    newer.write_text(json.dumps(m))
    out = tmp_path / "out"
    first = CliRunner().invoke(main, ["bench", str(pkg), "--devices", str(_devices(tmp_path, {"id": "host",
                                      "kind": "host"})), "--out", str(out), "--fallback", "none", "--artifact",
                                      "onnx-fp32", "--iterations", "3", "--min-seconds", "0"])  # fmt: skip
    assert first.exit_code == 0, first.output
    before = (out / "results.json").read_bytes()  # what the user already had: an earlier mpk bench run
    r = CliRunner().invoke(main, ["bench", str(newer), "--devices", str(_devices(tmp_path, {"id": "host",
                                  "kind": "host"})), "--out", str(out), "--fallback", "none"])  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "host: executorch-fp32:" in r.output and "9.1.0" in r.output
    assert metadata.version("executorch") in r.output, "the device's version is named too"
    assert "onnx-fp32" not in r.output.split("refusing")[1].split("hint")[0], "only what cannot load is named"
    assert "Traceback" not in r.output
    assert (out / "results.json").read_bytes() == before
    assert not (out.parent / "out.prev").exists(), "the earlier run was not moved aside: nothing was replaced"
    staging = [p.name for p in out.parent.iterdir() if p.name.startswith(".out")]
    assert staging == [], f"no cell was staged: {staging}"


def test_the_true_requirement_benchmarks_normally(pkg: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", str(pkg), "--devices", str(_devices(tmp_path, {"id": "host",
                                  "kind": "host"})), "--out", str(out), "--fallback", "none",
                                  "--artifact", "onnx-fp32"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "results.json").read_text())
    (cell,) = doc["cells"]
    assert cell["status"] == "ok", cell["error"]
    # the spec the runner got carried the requirement, for the apps to check again
    (spec_file,) = (out / "work").glob("*onnx-fp32*/spec.json")
    assert json.loads(spec_file.read_text())["artifacts"][0]["runtime"]["runtime"] == "onnxruntime"


def test_the_virtual_device_reports_nothing_and_is_not_refused(pkg: Path, tmp_path: Path) -> None:
    from runners import compat
    from runners.devices import DeviceSpec
    from runners.emulator import ensure_virtual_device

    serial, stop = ensure_virtual_device(tmp_path / "vd")
    try:
        dev = DeviceSpec(id="vd", kind="emulator", runner="android_app", transport="adb_shell", serial=serial)
        assert compat.device_runtimes(dev) is None
    finally:
        stop()


def test_mpk_package_records_what_each_artifact_needs(tmp_path: Path) -> None:
    """A real `mpk package` writes artifacts[].runtime (schema-checked; the .pte's is read in the tests above),
    and mpk bench's check accepts it for the runtime mpk itself verified it with."""
    from runners import compat

    r = CliRunner().invoke(main, ["package", "--model", "digits-cnn", "--quantize", "none", "--backends",
                                  "onnx,coreml", "--out", str(tmp_path / "pkg")])  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    runtimes = {a["backend"]: a["runtime"] for a in m["artifacts"]}
    assert runtimes["onnx"]["ir_version"] >= 10 and runtimes["onnx"]["min_version"] == "1.18"
    assert runtimes["coreml"]["spec_version"] >= 7 and runtimes["coreml"]["min_version"] == "16.0"
    host = compat.host_runtimes()
    assert compat.check(runtimes["onnx"], host).loadable is True, (runtimes["onnx"], host)
