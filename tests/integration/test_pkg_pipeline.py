"""End to end on the tiny digits-cnn: real torch.export, real ExecuTorch and ONNX Runtime, real files.

CoreML prediction needs macOS; on Linux the CoreML artifact is really built and structurally
checked, and its numeric verification is recorded as skipped (never passed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mpk.cli import main
from mpk.contract import problems, read_manifest
from mpk.errors import EXIT_INFRA, EXIT_MODEL, EXIT_USAGE, ModelError, OutputNotWritable, UsageError
from packager.manifest import sha256_path
from packager.pipeline import PackageResult, package
from packager.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]

FACTORY = """
import torch
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)
    def forward(self, pixels):
        return self.fc(torch.relu(self.conv(pixels)).mean(dim=(2, 3)))
def make():
    torch.manual_seed(0)
    return Tiny(), (torch.randn(1, 3, 16, 16),)
def broken():
    raise RuntimeError("checkpoint is corrupt")
"""

CUSTOM_OP = """
import torch
@torch.library.custom_op("mpktest::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2
class Net(torch.nn.Module):
    def forward(self, x):
        return wobble(x)
def make():
    return Net(), (torch.randn(1, 4),)
"""


@pytest.fixture(scope="module")
def digits_pkg(tmp_path_factory: pytest.TempPathFactory) -> PackageResult:
    out = tmp_path_factory.mktemp("digits") / "pkg"
    recipe = Recipe(
        model="digits-cnn",
        backends=("executorch", "onnx", "coreml"),
        schemes=("none", "int8"),
        eval_count=450,
        out=str(out),
    )
    return package(recipe)


def _artifact(result: PackageResult, art_id: str) -> dict:
    return next(a for a in result.manifest["artifacts"] if a["id"] == art_id)


def test_digits_int8_keeps_test_accuracy(digits_pkg: PackageResult) -> None:
    for backend in ("executorch", "onnx"):
        a = _artifact(digits_pkg, f"{backend}-int8")
        m = a["verification"]["metrics"]
        assert a["verification"]["status"] == "passed", a["verification"]
        assert a["verification"]["samples"] == 450
        assert m["fp32_accuracy"] >= 0.95
        assert abs(m["accuracy"] - m["fp32_accuracy"]) <= 0.01, m
        assert a["size_bytes"] < 0.4 * _artifact(digits_pkg, f"{backend}-fp32")["size_bytes"]
    assert _artifact(digits_pkg, "executorch-int8")["delegation"]["fraction"] == 1.0
    digits_pkg.check()  # exit 0: nothing failed


def test_coreml_is_skipped_not_passed_on_linux(digits_pkg: PackageResult) -> None:
    for scheme in ("fp32", "int8"):
        v = _artifact(digits_pkg, f"coreml-{scheme}")["verification"]
        if sys.platform == "darwin":
            assert v["status"] == "passed"
        else:
            assert v["status"] == "skipped" and v["passed"] is None and "macOS" in v["reason"]
            assert v["structural"] == {"ok": True, "problems": []}


def test_manifest_is_schema_valid_and_self_consistent(digits_pkg: PackageResult) -> None:
    man = digits_pkg.manifest
    assert problems(man, "manifest") == []
    assert read_manifest(digits_pkg.manifest_path) == man
    assert man["schema_version"] == "mpk.manifest/1" and man["data"]["evaluation"]["labelled"] is True
    assert man["data"]["calibration"]["synthetic"] is False
    for a in man["artifacts"]:
        path = digits_pkg.out / a["path"]
        assert sha256_path(path) == a["sha256"] and 0 < a["compressed_size_bytes"] <= a["size_bytes"] * 1.01
    ref = np.load(digits_pkg.out / "reference.npz")
    assert ref["input:image"].shape == (16, 1, 1, 8, 8) and ref["output:logits"].shape == (16, 1, 10)
    assert ref["labels"].shape == (16,)
    assert sha256_path(digits_pkg.out / "reference.npz") == man["reference"]["sha256"]
    # what the device will be fed reproduces what fp32 torch said
    session = (
        __import__("packager.export.onnx", fromlist=["x"])
        .OnnxExporter()
        .open(digits_pkg.out / _artifact(digits_pkg, "onnx-fp32")["path"])
    )
    got = session.run((ref["input:image"][0],))[0]
    np.testing.assert_allclose(got, ref["output:logits"][0], atol=1e-4)


def test_inspect_manifest_table(digits_pkg: PackageResult) -> None:
    r = CliRunner().invoke(main, ["inspect", str(digits_pkg.out)])
    assert r.exit_code == 0, r.output
    assert "executorch" in r.output and "int8" in r.output and "skipped" in r.output
    onnx_int8 = digits_pkg.out / _artifact(digits_pkg, "onnx-int8")["path"]
    r = CliRunner().invoke(main, ["inspect", "--json", str(onnx_int8)])
    assert r.exit_code == 0, r.output
    assert "QuantizeLinear" in r.output


def test_user_factory_file_packages_and_synthetic_is_loud(tmp_path: Path) -> None:
    f = tmp_path / "mymodel.py"
    f.write_text(FACTORY)
    out = tmp_path / "pkg"
    args = ["package", "--model", f"{f}:make", "--backends", "onnx", "--quantize", "none,int8"]
    args += ["--calibration", "random", "--evaluation", "random", "--eval-count", "8", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["source"] == {"kind": "file", "spec": f"{f}:make"}
    assert man["inputs"][0]["name"] == "pixels" and man["model"]["num_classes"] == 5
    assert man["data"]["calibration"]["synthetic"] is True and "SYNTHETIC" in man["data"]["calibration"]["warning"]
    assert {a["id"] for a in man["artifacts"]} == {"onnx-fp32", "onnx-int8"}


def test_cache_hit_on_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    shared = Path(os.environ["MPK_CACHE_DIR"]) / "models"
    if shared.is_dir():  # reuse the trained digits weights; the artifacts start cold
        shutil.copytree(shared, cache / "models")
    monkeypatch.setenv("MPK_CACHE_DIR", str(cache))
    args = ["package", "--model", "digits-cnn", "--backends", "executorch", "--quantize", "int8"]
    args += ["--eval-count", "32", "--out", str(tmp_path / "pkg")]
    t0 = time.perf_counter()
    first = CliRunner().invoke(main, args)
    t1 = time.perf_counter()
    second = CliRunner().invoke(main, args)
    t2 = time.perf_counter()
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "cached" not in first.output and "cached" in second.output
    assert t2 - t1 < (t1 - t0) * 0.7, (t1 - t0, t2 - t1)
    man = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert man["artifacts"][0]["cached"] is True
    assert (tmp_path / "pkg.prev" / "manifest.json").is_file()  # the first run's package, kept


def test_factory_that_raises_keeps_previous_output(tmp_path: Path, digits_pkg: PackageResult) -> None:
    out = tmp_path / "pkg"
    shutil.copytree(digits_pkg.out, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    f = tmp_path / "m.py"
    f.write_text(FACTORY)
    r = CliRunner().invoke(main, ["package", "--model", f"{f}:broken", "--backends", "onnx", "--out", str(out)])
    assert r.exit_code == EXIT_MODEL and "checkpoint is corrupt" in r.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_unrelated_files_refused_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not an mpk package"):
        package(Recipe(model="digits-cnn", backends=("onnx",), schemes=("none",), out=str(out)))
    assert (out / "thesis.tex").read_text() == "precious"
    res = package(Recipe(model="digits-cnn", backends=("onnx",), schemes=("none",), out=str(out), force=True))
    assert res.previous == tmp_path / "mine.prev" and (res.previous / "thesis.tex").read_text() == "precious"


def test_output_not_writable(tmp_path: Path) -> None:
    """Tests run as root, which ignores chmod; a path below a regular file fails for root too."""
    (tmp_path / "file.txt").write_text("x")
    r = CliRunner().invoke(main, ["package", "--model", "digits-cn", "--out", str(tmp_path / "file.txt" / "sub")])
    assert r.exit_code == EXIT_USAGE  # the misspelt model is caught before the output is touched
    with pytest.raises(OutputNotWritable) as ei:
        package(Recipe(model="digits-cnn", backends=("onnx",), out=str(tmp_path / "file.txt" / "sub")))
    assert ei.value.exit_code == EXIT_INFRA


def test_export_failure_names_the_operator(tmp_path: Path) -> None:
    f = tmp_path / "custom.py"
    f.write_text(CUSTOM_OP)
    res = package(
        Recipe(
            model=f"{f}:make",
            backends=("executorch", "onnx"),
            schemes=("none",),
            calibration="random",
            evaluation="random",
            out=str(tmp_path / "pkg"),
        )
    )
    assert [x["backend"] for x in res.failures] == ["executorch", "onnx"]
    assert all("mpktest::wobble" in x["error"] for x in res.failures)
    assert (tmp_path / "pkg" / "manifest.json").is_file()  # written before the exit code is decided
    with pytest.raises(ModelError, match="could not be exported"):
        res.check()


def test_disk_full_keeps_previous_output(tmp_path: Path, digits_pkg: PackageResult) -> None:
    """A real write failure: RLIMIT_FSIZE (ulimit -f) makes writes past 100 KB fail with EFBIG, as root too."""
    out = tmp_path / "pkg"
    shutil.copytree(digits_pkg.out, out)
    manifest_before = (out / "manifest.json").read_bytes()
    cache = tmp_path / "cache"
    shared = Path(os.environ["MPK_CACHE_DIR"]) / "models"
    if shared.is_dir():
        shutil.copytree(shared, cache / "models")
    code = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n"
        "from mpk.cli import main\n"
        "main(['package', '--model', 'digits-cnn', '--backends', 'onnx', '--quantize', 'none',"
        f" '--out', {str(out)!r}])\n"
    )
    env = dict(os.environ, MPK_CACHE_DIR=str(cache))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == EXIT_INFRA, r.stdout + r.stderr
    assert "disk full" in r.stderr
    assert (out / "manifest.json").read_bytes() == manifest_before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


DEPTHWISE = """
import torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c2 = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 10)
    def forward(self, x):
        x = torch.relu(self.c1(x)); x = torch.relu(self.dw(x)); x = torch.relu(self.c2(x))
        return self.fc(x.mean(dim=(2, 3)))
def make():
    torch.manual_seed(0)
    return Net(), (torch.randn(1, 3, 16, 16),)
"""


def test_an_export_never_changes_the_model_the_next_one_exports(tmp_path: Path) -> None:
    """ExecuTorch int8 bias correction edits conv biases in place, and the converted graph shares them with
    the user's module. Exported after it, the fp32 artifacts used to carry shifted biases (SNR 61 dB against
    fp32 PyTorch instead of > 100): every export now gets its own copy of the one captured program."""
    f = tmp_path / "dw.py"
    f.write_text(DEPTHWISE)
    res = package(
        Recipe(
            model=f"{f}:make",
            backends=("executorch", "onnx"),
            schemes=("int8", "none"),  # int8 first: the fp32 exports come after the correction
            calibration="random",
            evaluation="random",
            eval_count=16,
            cache=False,
            out=str(tmp_path / "pkg"),
        )
    )
    et_int8 = _artifact(res, "executorch-int8")
    assert et_int8["details"]["quantizer"]["bias_correction"]["applied"] is True  # else nothing was tested
    for art_id in ("executorch-fp32", "onnx-fp32"):
        snr = _artifact(res, art_id)["verification"]["metrics"]["snr_db"]
        assert snr > 100, (art_id, snr)


CALIBRATION_COUNTER = """
from pathlib import Path
import numpy as np
from packager.models.builtin import digits_split

def train(count):
    with open(Path(__file__).with_name("calls.txt"), "a") as f:
        f.write(f"{count}\\n")
    x, y, _, _ = digits_split()
    return x[:count], y[:count]
"""


def test_calibration_data_is_loaded_once(tmp_path: Path) -> None:
    """int8 calibration, pruning's importance and distillation's training set come from one load."""
    f = tmp_path / "data.py"
    f.write_text(CALIBRATION_COUNTER)
    res = package(
        Recipe(
            model="digits-cnn",
            backends=("onnx",),
            schemes=("int8",),
            calibration=f"{f}:train",
            calibration_count=32,
            eval_count=64,
            compression={
                "unstructured": {"amount": 0.3},
                "distill": {"epochs": 1, "samples": 80, "batch_size": 32, "augment": "none"},
            },
            cache=False,
            out=str(tmp_path / "pkg"),
        )
    )
    assert (tmp_path / "calls.txt").read_text().split() == ["80"]
    assert res.manifest["data"]["calibration"]["count"] == 32  # int8 ranges from the first 32
    distill = res.manifest["compression"]["distill"]
    assert distill["steps"] == 3 and distill["used_labels"] is True  # 80 labelled samples, batches of 32
    assert _artifact(res, "onnx-int8")["verification"]["status"] == "passed"


def test_qat_artifact_goes_through_the_artifact_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    shared = Path(os.environ["MPK_CACHE_DIR"]) / "models"
    if shared.is_dir():
        shutil.copytree(shared, cache / "models")
    monkeypatch.setenv("MPK_CACHE_DIR", str(cache))

    def run(out: str) -> PackageResult:
        return package(
            Recipe(
                model="digits-cnn",
                backends=("onnx",),
                schemes=("none",),
                eval_count=64,
                compression={"qat": {"epochs": 1, "batch_size": 32, "augment": "none"}},
                out=str(tmp_path / out),
            )
        )

    first, second = run("a"), run("b")
    a, b = _artifact(first, "executorch-int8-qat"), _artifact(second, "executorch-int8-qat")
    assert a["cached"] is False and b["cached"] is True
    assert "compress" in first.timings and "compress" not in second.timings  # no training on the re-run
    assert a["sha256"] == b["sha256"] and a["verification"] == b["verification"]
    assert first.manifest["compression"] == second.manifest["compression"]
    assert a["verification"]["status"] == "passed" and a["verification"]["tolerances"]["min_cosine"] == 0.97
    assert sha256_path(tmp_path / "b" / b["path"]) == b["sha256"]


# --- ExecuTorch's lowering beside the next artifact (packager.host.Forked) ---------------------------------


def _tiny_recipe(tmp_path: Path, backends: tuple[str, ...], schemes: tuple[str, ...], **kw) -> Recipe:
    tmp_path.mkdir(parents=True, exist_ok=True)
    f = tmp_path / "tiny.py"
    f.write_text(FACTORY)
    base = dict(model=f"{f}:make", backends=backends, schemes=schemes, calibration="random", evaluation="random",
                calibration_count=8, eval_count=8, cache=False, out=str(tmp_path / "pkg"))  # fmt: skip
    return Recipe(**{**base, **kw})


def _notes(events: list[tuple[str, str]]) -> list[str]:
    return [text for kind, text in events if kind == "note"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk lowers in a forked child only on Linux")
def test_lowering_beside_the_next_artifact_writes_the_same_program(tmp_path: Path) -> None:
    """With ONNX after it, ExecuTorch int8 is lowered in a child process while ONNX builds; alone, in this one.
    The .pte, its op map, delegation, op counts and per-layer table are the same bytes and numbers either way.
    (The ETRecord differs between any two runs, in-process ones too: it stores zip times and graph ids.)"""
    events: list[tuple[str, str]] = []
    both = package(_tiny_recipe(tmp_path / "a", ("executorch", "onnx"), ("int8",)),
                   progress=lambda kind, text, dt: events.append((kind, text)))  # fmt: skip
    alone_events: list[tuple[str, str]] = []
    alone = package(_tiny_recipe(tmp_path / "b", ("executorch",), ("int8",)),
                    progress=lambda kind, text, dt: alone_events.append((kind, text)))  # fmt: skip
    assert any("executorch-int8: lowering in a child process" in n for n in _notes(events)), events
    assert not any("child process" in n for n in _notes(alone_events)), alone_events
    assert [a["id"] for a in both.manifest["artifacts"]] == ["executorch-int8", "onnx-int8"]  # recipe order
    a, b = _artifact(both, "executorch-int8"), _artifact(alone, "executorch-int8")
    assert a["sha256"] == b["sha256"] and a["size_bytes"] == b["size_bytes"]
    for key in ("delegation", "op_summary"):
        assert a[key] == b[key], key
    assert a["profiling"]["op_map"] == b["profiling"]["op_map"]
    members = [sorted(zipfile.ZipFile(r.out / x["profiling"]["etrecord"]["path"]).namelist()) for r, x in
               ((both, a), (alone, b))]  # fmt: skip
    assert members[0] == members[1] and "edge_dialect_exported_program/forward" in members[0]
    assert a["details"]["partitioner"] == b["details"]["partitioner"] == "XnnpackPartitioner"
    # the per-layer table is measured here while the child lowers, and is the same table
    assert a["details"]["layer_errors"]["worst"] and a["details"]["layer_errors"] == b["details"]["layer_errors"]
    assert a["details"]["quantizer"] == b["details"]["quantizer"]
    assert a["verification"]["status"] == "passed" and a["verification"]["metrics"] == b["verification"]["metrics"]


def _lower_in_child_only(behaviour):
    """A stand-in for ExecuTorch's ``_lower`` that misbehaves in the forked child and lowers normally here."""
    import packager.export.executorch as et

    real, parent = et._lower, os.getpid()

    def lower(*a, **k):
        if os.getpid() != parent:
            behaviour()
        return real(*a, **k)

    return lower


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk lowers in a forked child only on Linux")
def test_a_lowering_child_that_dies_is_one_failure_and_the_rest_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child killed (the OOM killer's SIGKILL): one line naming the backend and the signal, exit 5."""
    import packager.export.executorch as et

    monkeypatch.setattr(et, "_lower", _lower_in_child_only(lambda: os.kill(os.getpid(), 9)))
    res = package(_tiny_recipe(tmp_path, ("executorch", "onnx"), ("none",)))
    (f,) = res.failures
    assert f["backend"] == "executorch" and "lowering" in f["error"] and "signal 9" in f["error"], f
    assert [a["id"] for a in res.manifest["artifacts"]] == ["onnx-fp32"]
    with pytest.raises(ModelError) as info:
        res.check()
    assert info.value.exit_code == EXIT_MODEL
    assert list((tmp_path / "pkg").glob(".tmp-*")) == []  # the half-built folder went with it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk lowers in a forked child only on Linux")
def test_a_lowering_child_past_the_step_limit_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step limit counts from the export's start, the ONNX build beside it included; at the limit the child
    is killed (not left lowering behind the user's back) and the failure says which limit."""
    import multiprocessing

    import packager.export.executorch as et

    monkeypatch.setattr(et, "_lower", _lower_in_child_only(lambda: time.sleep(600)))
    t0 = time.monotonic()
    res = package(_tiny_recipe(tmp_path, ("executorch", "onnx"), ("none",), step_timeout=20))
    assert time.monotonic() - t0 < 120
    (f,) = res.failures
    assert f["backend"] == "executorch" and "did not finish within 20 s" in f["error"], f
    assert [a["id"] for a in res.manifest["artifacts"]] == ["onnx-fp32"]
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk lowers in a forked child only on Linux")
def test_a_failure_that_stops_the_run_kills_the_lowering_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while ONNX builds stops the run (the previous output is kept); the ExecuTorch lowering running
    beside it stops with it."""
    import errno
    import multiprocessing

    import packager.export.executorch as et
    from packager.export.onnx import OnnxExporter

    monkeypatch.setattr(et, "_lower", _lower_in_child_only(lambda: time.sleep(600)))

    class DiskFull(OnnxExporter):
        def export(self, *a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        package(_tiny_recipe(tmp_path, ("executorch", "onnx"), ("none",)), exporters={"onnx": DiskFull()})
    assert time.monotonic() - t0 < 120
    assert "No space left" in str(info.value) or "disk full" in str(info.value), info.value
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "pkg").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mpk lowers in a forked child only on Linux")
def test_failures_are_listed_in_recipe_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ExecuTorch's failure is known only after ONNX's (its child is waited for last); the manifest still lists
    them as the recipe orders the backends."""
    import packager.export.executorch as et
    from mpk.errors import ExportError
    from packager.export.onnx import OnnxExporter

    monkeypatch.setattr(et, "_lower", _lower_in_child_only(lambda: os.kill(os.getpid(), 9)))

    class Refuses(OnnxExporter):
        def export(self, *a, **k):
            raise ExportError("onnx", "operator aten.wobble has no ONNX symbolic")

    res = package(_tiny_recipe(tmp_path, ("executorch", "onnx"), ("none",)), exporters={"onnx": Refuses()})
    assert [f["backend"] for f in res.failures] == ["executorch", "onnx"], res.failures
    assert res.manifest["failures"] == res.failures and res.manifest["artifacts"] == []
