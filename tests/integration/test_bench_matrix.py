"""The benchmark matrix end to end: host runner, mpk's virtual Android device over real adb, results.json.

The only stand-in is ``FlakyPhone``: a phone that drops off USB mid-run
cannot exist here, so a driver that measures on the host and then raises
DeviceError plays it (see its docstring).
"""

from __future__ import annotations

import itertools
import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpk.contract import read_results, validate_results
from mpk.errors import DeviceError
from runners.config import parse_devices
from runners.drivers import DRIVERS
from runners.drivers.host import HostDriver
from runners.matrix import run_cell, run_matrix

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package

FAST = {"warmup_iterations": 1, "min_iterations": 5, "min_seconds": 0.1, "cooldown_s": 0}


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package plus a second id for the same ONNX file, so cells stay ONNX-fast."""
    d = tmp_path_factory.mktemp("pkg")
    path = tiny_package(d)
    m = json.loads(path.read_text())
    m["artifacts"].append({**m["artifacts"][0], "id": "onnx-fp32-b"})
    path.write_text(json.dumps(m))
    return path


def _config(*devices: dict) -> object:
    return parse_devices({"version": 1, "defaults": FAST, "devices": list(devices)})


def _interval(cell: dict) -> tuple[datetime, datetime]:
    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")

    return parse(cell["started_utc"]), parse(cell["finished_utc"])


def test_absent_phone_in_ci_runs_on_the_virtual_device(pkg: Path, tmp_path: Path, monkeypatch) -> None:
    """CI set, phone absent: its cell runs on mpk's virtual device over adb, marked emulated, never as the phone.
    Host and virtual cells share the host CPU lock, so their timing windows never overlap."""
    monkeypatch.setenv("CI", "1")
    cfg = _config(
        {"id": "host", "kind": "host"},
        {"id": "pixel-7", "kind": "android", "serial": "MPK-ABSENT-0", "transport": "adb_server"},
        {"id": "virtual-android", "kind": "emulator"},
    )
    doc = run_matrix(pkg, cfg, tmp_path / "out", only_artifacts=["onnx-fp32"])
    assert doc == read_results(tmp_path / "out" / "results.json") and doc["complete"] is True
    cells = {c["device_id"]: c for c in doc["cells"]}
    assert all(c["outcome"] == "ok" for c in cells.values()), [c["error"] for c in cells.values()]
    phone = cells["pixel-7"]
    assert phone["emulated"] is True and phone["ran_on"] == "virtual-android"
    assert phone["device"]["host_cpu"] and phone["device"]["os"] == "android"
    assert phone["result"]["accuracy"]["top1_agreement"] == 1.0
    assert cells["virtual-android"]["emulated"] is True
    assert cells["host"]["emulated"] is False and cells["host"]["ran_on"] == "host"
    windows = sorted(_interval(c) for c in cells.values())
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, "two host-CPU cells were timing at the same time"


def test_absent_phone_without_fallback_is_skipped(pkg: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    cfg = _config({"id": "pixel-7", "kind": "android", "serial": "MPK-ABSENT-0", "transport": "adb_server"})
    doc = run_matrix(pkg, cfg, tmp_path / "out")
    assert [c["outcome"] for c in doc["cells"]] == ["skipped"] * 3
    assert all(c["ran_on"] is None and "device absent" in c["error"] for c in doc["cells"])


class FlakyPhone(HostDriver):
    """Stands in for a phone that disconnects after its first cell (a real one cannot exist here):
    measures on the host, then raises DeviceError as a dropped USB link would."""

    name = "flaky_test"
    calls = 0

    def run(self, spec_dir, spec, device, *, timeout_s=3600):
        type(self).calls += 1
        if type(self).calls > 1:
            raise DeviceError(device.id, "usb disconnected", reason="not-found")
        return super().run(spec_dir, spec, device, timeout_s=timeout_s)


def test_failing_device_fails_only_its_cells_and_results_are_incremental(pkg: Path, tmp_path: Path) -> None:
    DRIVERS.register("flaky_test", FlakyPhone)
    try:
        cfg = _config({"id": "host", "kind": "host"}, {"id": "flaky", "kind": "host", "runner": "flaky_test"})
        seen: list[int] = []

        def progress(ev: dict) -> None:
            if ev["event"] == "done":  # the file on disk is valid and holds what finished so far
                on_disk = validate_results(json.loads((tmp_path / "out" / "results.json").read_text()))
                assert on_disk["complete"] is False
                seen.append(len(on_disk["cells"]))

        doc = run_matrix(pkg, cfg, tmp_path / "out", only_artifacts=["onnx-fp32", "onnx-fp32-b"], progress=progress)
    finally:
        DRIVERS._entries.pop("flaky_test")
    assert sorted(seen) == [1, 2, 3, 4]
    by = {(c["device_id"], c["artifact_id"]): c for c in doc["cells"]}
    assert by[("host", "onnx-fp32")]["outcome"] == by[("host", "onnx-fp32-b")]["outcome"] == "ok"
    assert by[("flaky", "onnx-fp32")]["outcome"] == "ok"
    failed = by[("flaky", "onnx-fp32-b")]
    assert failed["outcome"] == "infra_error" and failed["status"] == "error" and "usb disconnected" in failed["error"]
    assert read_results(tmp_path / "out" / "results.json")["complete"] is True


def test_run_cell_takes_exactly_the_requested_iterations(pkg: Path, tmp_path: Path) -> None:
    cfg = _config({"id": "host", "kind": "host"})
    cell = run_cell(
        pkg, cfg, "host", "onnx-fp32", tmp_path, iterations=7, settings={"threads": 1, "warmup_iterations": 0}
    )
    assert cell["outcome"] == "ok" and cell["result"]["iterations"] == 7 and cell["emulated"] is False


def test_cli_dry_run_resolves_flags_over_yaml(pkg: Path, tmp_path: Path, repo_root: Path) -> None:
    from mpk.cli import main

    r = CliRunner().invoke(main, ["bench", str(pkg), "--devices", str(repo_root / "devices.yaml"), "--out",
                                  str(tmp_path), "--dry-run", "--threads", "3", "--device", "host",
                                  "--fallback", "none"])  # fmt: skip
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["cells"] == [["host", "onnx-fp32"], ["host", "executorch-fp32"], ["host", "onnx-fp32-b"]]
    assert plan["devices"][0]["settings"]["threads"] == 3 and plan["fallback"] == "none"
    r = CliRunner().invoke(main, ["bench", str(pkg), "--devices", str(repo_root / "devices.yaml"), "--out",
                                  str(tmp_path), "--device", "pixle-7"])  # fmt: skip
    assert r.exit_code == 2 and "did you mean 'pixel-7'" in r.output
