"""Per-operator profiles on real runtimes, mapped back to a real PyTorch model (issue #16).

One real ``mpk package`` of an EfficientNet-shaped tiny model (tests/integration/profile_model.py: a stem whose
BatchNorm and ReLU6 are separate modules, a ModuleList of inverted-residual blocks, a root-level flatten), fp32
and int8, ExecuTorch and ONNX. Then:

- the op maps the exporters wrote: listed in the manifest with their sha256, every module path a key of
  ``dict(model.named_modules())``, every op of the artifact mapped (their op counts are the manifest's
  op_summary), inserted Q/DQ nodes placed on the op they wrap;
- the host runner's profiled pass on each artifact: ONNX Runtime's own per-node timings, each conv of the graph
  found once in the profile and on its conv module; ExecuTorch's runtime shown to have no event tracer, and
  the per-unit estimate covering every op of the program exactly once; the timed samples untouched;
- ``mpk bench --profile`` on this host and on mpk's virtual Android device, the Chrome traces it writes, and
  ``mpk report``'s profile section (report.md, report.html in headless Chromium).

Nothing is mocked: real exporters, real ONNX Runtime and ExecuTorch, a real adb peer on loopback.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpk.contract import read_manifest, validate_result, write_spec
from mpk.contract.profile import read_opmap
from mpk.profiling import attach_sources, rollup, unit_of

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests/integration/profile_model.py"
#: ops ONNX Runtime inserts itself (layout conversions): no node of the exported graph stands behind them
ORT_LAYOUT = {"ReorderInput", "ReorderOutput", "Transpose"}


def mpk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CI", None)
    r = subprocess.run([sys.executable, "-m", "mpk", *args], capture_output=True, text=True, env=env, cwd=cwd,
                       timeout=1500)  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("profiles")
    r = mpk("package", "--model", f"{MODEL}:make", "--backends", "executorch,onnx", "--quantize", "none,int8",
            "--calibration", "random", "--evaluation", "random", "--eval-count", "8", "--out", "pkg",
            cwd=work)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return work / "pkg"


@pytest.fixture(scope="module")
def modules() -> dict[str, Any]:
    sys.path.insert(0, str(MODEL.parent))
    try:
        import profile_model
    finally:
        sys.path.remove(str(MODEL.parent))
    model, _ = profile_model.make()
    return dict(model.named_modules())


def _art(pkg: Path, art_id: str) -> dict[str, Any]:
    return next(a for a in read_manifest(pkg / "manifest.json")["artifacts"] if a["id"] == art_id)


@pytest.mark.parametrize("art_id", ["onnx-fp32", "onnx-int8", "executorch-fp32", "executorch-int8"])
def test_the_op_map_is_packaged_and_names_real_modules(pkg: Path, modules: dict[str, Any], art_id: str) -> None:
    art = _art(pkg, art_id)
    entry = art["profiling"]["op_map"]
    data = (pkg / entry["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size_bytes"]
    opmap = read_opmap(pkg / entry["path"])
    assert set(opmap["modules"]) == set(modules)
    assert opmap["units"] == ["_conv_stem", "_bn0", "_blocks.0", "_blocks.1", "_blocks.2", "_conv_head", "_bn1",
                              "_avg_pooling", "_fc", "_act"]  # fmt: skip
    nodes = opmap["nodes"]
    assert all(n["module"] in modules for n in nodes), [n for n in nodes if n["module"] not in modules]
    # every op of the artifact is in the map, exactly once
    assert dict(collections.Counter(n["op_type"] for n in nodes)) == art["op_summary"]
    convs = {n["module"] for n in nodes if n["op_type"] in ("Conv", "aten.convolution")}
    assert convs == {p for p, m in modules.items() if type(m).__name__ == "Conv2d"}  # a BN-folded conv is its conv
    weighted = [n for n in nodes if n["op_type"] in ("Conv", "aten.convolution", "Gemm", "aten.linear")
                or "dequantize_per_channel" in n["op_type"]]  # fmt: skip
    assert all(n["unit"] == unit_of(n["module"], opmap["units"]) for n in weighted)  # a weight counts where it is used
    units = collections.Counter(n["unit"] for n in nodes)
    assert set(units) == {"_conv_stem", "_blocks.0", "_blocks.1", "_blocks.2", "_conv_head", "_avg_pooling", "_fc"}
    if art["backend"] == "executorch":
        assert (pkg / art["profiling"]["etrecord"]["path"]).stat().st_size > 1000
        assert opmap["etrecord"] == Path(art["profiling"]["etrecord"]["path"]).name
        assert all(n["delegate"] == "XnnpackBackend" for n in nodes if n["op_type"] == "aten.convolution")
    if art["scheme"] == "int8":  # Q/DQ inserted by the quantizer sit on the op they wrap, never on the root
        qdq = [n for n in nodes if "uantize" in n["op_type"]]
        assert qdq and all(n["module"] is not None for n in qdq)
        producer = {t: n for n in nodes for t in n.get("outputs") or []}
        for n in qdq:  # on the root only when the op it wraps is the root's own (the flatten in its forward)
            if n["module"] == "" and n["op_type"] == "QuantizeLinear":
                assert producer[n["inputs"][0]]["module"] == "", n
            elif art["backend"] == "onnx":
                assert n["module"] != "", n


def test_inspect_checks_the_op_map_like_any_packaged_file(pkg: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    op_map = copy / _art(copy, "onnx-fp32")["profiling"]["op_map"]["path"]
    op_map.write_text(op_map.read_text().replace("_conv_stem", "_conv_stom", 1))
    r = mpk("inspect", str(copy), cwd=tmp_path)
    assert r.returncode == 1 and "opmap.json" in r.stdout + r.stderr


@pytest.fixture(scope="module")
def host_result(pkg: Path) -> dict[str, Any]:
    """One host-runner run of all four artifacts with the profiled pass on (spec as mpk bench builds it)."""
    from runners.devices import RunSettings
    from runners.host_runner import run_spec
    from runners.matrix import build_spec, write_reference

    manifest = read_manifest(pkg / "manifest.json")
    reference = write_reference(manifest, pkg, pkg / "reference")
    settings = RunSettings(warmup_iterations=2, min_iterations=12, min_seconds=0.0, max_seconds=30.0, profile=True)
    spec = build_spec("prof", "host", settings, manifest["artifacts"][0], reference)
    spec["artifacts"] = [build_spec("prof", "host", settings, a, None)["artifacts"][0] for a in manifest["artifacts"]]
    path = write_spec(pkg / "spec-profile.json", spec)
    return validate_result(run_spec(path))


def _profile(result: dict[str, Any], pkg: Path, art_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    art = next(a for a in result["artifacts"] if a["id"] == art_id)
    assert art["status"] == "ok", art.get("error")
    opmap = read_opmap(pkg / _art(pkg, art_id)["profiling"]["op_map"]["path"])
    return art, attach_sources(art["profile"], opmap)


@pytest.mark.parametrize("art_id", ["onnx-fp32", "onnx-int8"])
def test_onnx_runtime_times_every_node_and_each_maps_back(pkg: Path, host_result: dict, modules: dict,
                                                          art_id: str) -> None:  # fmt: skip
    from mpk.hostcpu import isa_label
    from packager.profiling import RUNS

    art, prof = _profile(host_result, pkg, art_id)
    assert prof["status"] == "measured" and prof["runs"] == RUNS and "enable_profiling" in prof["method"]
    assert all(o["calls"] == RUNS for o in prof["ops"])  # every node ran once per profiled inference
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0)
    assert all(o["mean_ms"] == pytest.approx(o["total_ms"] / o["calls"]) for o in prof["ops"])
    # the timed loop is untouched and the comparison is with it
    assert art["iterations"] == len(art["samples_ms"]) >= 12
    assert prof["unprofiled_p50_ms"] == art["stats"]["p50_ms"] and prof["unprofiled_mean_ms"] == art["stats"]["mean_ms"]
    assert prof["vs_p50"] == pytest.approx(prof["per_run_ms"] / art["stats"]["p50_ms"] - 1)
    assert prof["overhead"] is not None and prof["profiled_ms"] > 0
    # every op but ORT's own layout conversions is on a module of the model; each conv of the graph once
    mapped = [o for o in prof["ops"] if o["op_type"] not in ORT_LAYOUT]
    assert all(o["module"] in modules for o in mapped), [o for o in mapped if o["module"] not in modules]
    conv_rows = [o for o in prof["ops"] if o["source"] and o["op_type"] in ("Conv", "QLinearConv", "FusedConv")]
    assert len(conv_rows) == _art(pkg, art_id)["op_summary"]["Conv"]
    assert {o["module"] for o in conv_rows} == {p for p, m in modules.items() if type(m).__name__ == "Conv2d"}
    # the unattributed time is ORT's layout conversions' (a tiny net's µs kernels make its share a timing matter;
    # the EfficientNet test holds the >= 95% line)
    assert prof["attributed_share"] == pytest.approx(sum(o["share"] for o in prof["ops"] if o["module"] is not None))
    assert {o["op_type"] for o in prof["ops"] if o["module"] is None} <= ORT_LAYOUT
    if art_id.endswith("int8"):
        assert prof["kernel"] == isa_label()  # the host's int8 kernel, as it ran
    else:
        assert prof.get("kernel") is None


@pytest.mark.parametrize("art_id", ["executorch-fp32", "executorch-int8"])
def test_executorch_says_what_it_cannot_and_estimates_every_op_once(pkg: Path, host_result: dict, modules: dict,
                                                                    art_id: str) -> None:  # fmt: skip
    art, prof = _profile(host_result, pkg, art_id)
    assert prof["status"] == "estimated" and prof["method"].startswith("estimate:")
    assert any("EXECUTORCH_ENABLE_EVENT_TRACER" in limit for limit in prof["limits"])
    assert all(o["estimated"] for o in prof["ops"])
    assert [o["name"] for o in prof["ops"]] == ["_conv_stem", "_blocks.0", "_blocks.1", "_blocks.2", "_conv_head",
                                                "_avg_pooling", "_fc"]  # fmt: skip
    assert all(o["module"] in modules for o in prof["ops"])
    # the units together hold every op of the .pte, each once, all delegated as in the real program
    total: collections.Counter[str] = collections.Counter()
    for o in prof["ops"]:
        total.update(o["op_counts"])
    manifest_art = _art(pkg, art_id)
    assert dict(total) == manifest_art["op_summary"]
    assert sum(o["delegated_ops"] for o in prof["ops"]) == manifest_art["delegation"]["delegated_ops"]
    assert prof["per_run_ms"] == pytest.approx(sum(o["mean_ms"] for o in prof["ops"]))
    assert prof["vs_p50"] == pytest.approx(prof["per_run_ms"] / art["stats"]["p50_ms"] - 1)
    assert prof["attributed_share"] == 1.0


def test_the_pypi_executorch_runtime_has_no_event_tracer(pkg: Path, tmp_path: Path) -> None:
    """The limit the ExecuTorch profiles state, checked on the runtime itself: if a future wheel records ETDumps,
    this fails and the estimate should give way to measured per-op times."""
    import torch
    from executorch.extension.pybindings import portable_lib

    module = portable_lib._load_for_executorch(str(pkg / _art(pkg, "executorch-fp32")["path"]), enable_etdump=True,
                                               debug_buffer_size=0)  # fmt: skip
    module.forward([torch.zeros(1, 3, 32, 32)])
    module.write_etdump_result_to_file(str(tmp_path / "out.etdp"), str(tmp_path / "debug.bin"))
    assert not (tmp_path / "out.etdp").exists()


DEVICES = """\
version: 1
defaults: {warmup_iterations: 1, min_iterations: 10, min_seconds: 0, max_seconds: 30, cooldown_s: 0, threads: 1}
devices:
  - {id: host, kind: host}
  - {id: pixel-7, kind: android, serial: MPK-PROFILE-ABSENT, transport: adb_server, threads: 1, profile: true}
"""


@pytest.fixture(scope="module")
def bench_dir(pkg: Path) -> Path:
    work = pkg.parent
    (work / "devices.yaml").write_text(DEVICES)
    r = mpk("bench", "pkg/manifest.json", "--devices", "devices.yaml", "--fallback", "emulator", "--out", "bench",
            "--artifact", "onnx-fp32", "--artifact", "executorch-fp32", "--profile", cwd=work)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "slowest unit" in r.stdout and "Chrome traces" in r.stdout
    return work / "bench"


def test_bench_profile_on_host_and_virtual_device(bench_dir: Path, modules: dict) -> None:
    doc = json.loads((bench_dir / "results.json").read_text())
    cells = {(c["device_id"], c["artifact_id"]): c for c in doc["cells"]}
    assert len(cells) == 4 and all(c["outcome"] == "ok" for c in cells.values())
    assert cells[("pixel-7", "onnx-fp32")]["emulated"] is True  # the virtual device's "app" ran the profile
    for key, cell in cells.items():
        prof = cell["result"]["profile"]
        assert prof["source_map"] == "mpk.opmap/1" and prof["attributed_share"] > 0.5, key
        assert cell["settings"]["profile"] is True
        assert {r["module"] for r in rollup(prof, by="unit")} - {None} <= set(modules) | {"(root)"}
        trace = json.loads((bench_dir / "profiles" / f"{key[0]}--{key[1]}.trace.json").read_text())
        complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
        assert [e["name"] for e in complete] == [o["name"] for o in prof["ops"]]  # one complete event per op
        assert all(e["dur"] >= 0 and isinstance(e["ts"], float) for e in complete)
    assert cells[("host", "executorch-fp32")]["result"]["profile"]["status"] == "estimated"
    assert cells[("pixel-7", "executorch-fp32")]["result"]["profile"]["status"] == "estimated"  # ETRecord sent along
    assert cells[("pixel-7", "onnx-fp32")]["result"]["profile"]["status"] == "measured"


def test_report_shows_the_profiles_side_by_side(bench_dir: Path, tmp_path: Path) -> None:
    work = bench_dir.parent
    r = mpk("report", "bench/results.json", "--out", str(tmp_path / "report"), cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "### Profiles" in md and "**Same module, side by side**" in md
    table = md[md.index("| Unit |") :].split("\n\n")[0].splitlines()
    assert "host / executorch-fp32" in table[0] and "pixel-7 (emulated) / onnx-fp32" in table[0]
    assert len(table) == 2 + 5 and " est." in table[2]  # the five slowest units; ExecuTorch labelled an estimate
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Profiles — which module is slow" in html and 'aria-label="time per module, side by side' in html
    from tests.integration.test_report_chromium import CHROMIUM, _chromium

    if CHROMIUM is None:
        pytest.skip("Debian's chromium package is not installed")
    dom = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", (tmp_path / "report" / "report.html")
                     .resolve().as_uri()], tmp_path)  # fmt: skip
    assert dom.returncode == 0 and "Uncaught" not in dom.stderr and "ERROR:CONSOLE" not in dom.stderr
    assert "Same module, side by side" in dom.stdout and dom.stdout.count("<svg") >= 3
