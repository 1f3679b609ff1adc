"""The package cache: a re-run reuses artifacts, verifications, references and model facts, and can be
trusted. Real `mpk package` processes on digits-cnn with real ExecuTorch and ONNX Runtime, a real cache
folder; tampering is done to the real files on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from mpk.errors import EXIT_CHECK_FAILED
from packager.manifest import sha256_path
from packager.pipeline import package
from packager.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "executorch", "onnxruntime", "coremltools", "sklearn", "skimage", "onnx")
ARGS = ["--model", "digits-cnn", "--backends", "executorch,onnx", "--quantize", "int8", "--eval-count", "64"]


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    #: heavy libraries the process had imported when it exited
    imported: list[str]
    manifest: dict


def _fresh_cache(path: Path) -> Path:
    """An empty cache holding only digits-cnn's trained weights (training them is not under test)."""
    shared = Path(os.environ["MPK_CACHE_DIR"]) / "models"
    if shared.is_dir():
        shutil.copytree(shared, path / "models")
    return path


def mpk_package(cache: Path, out: Path, *extra: str) -> Run:
    """``mpk package`` in a fresh process, as a user runs it; reports which heavy modules it imported."""
    code = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: print('IMPORTED=' + ','.join(m for m in heavy if m in sys.modules)))\n"
        "from mpk.cli import run\n"
        f"run(['package', *{[*ARGS, *extra]!r}, '--out', {str(out)!r}])\n"
    )
    env = dict(os.environ, MPK_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("TORCH_LOGS", None)  # mpk leaves a user's own setting alone; this test checks its default
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    imported = next(ln for ln in r.stdout.splitlines() if ln.startswith("IMPORTED=")).removeprefix("IMPORTED=")
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    return Run(r.returncode, r.stdout, r.stderr, [m for m in imported.split(",") if m], manifest)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run, Run]:
    base = tmp_path_factory.mktemp("cache-runs")
    cache = _fresh_cache(base / "cache")
    first = mpk_package(cache, base / "pkg")
    second = mpk_package(cache, base / "pkg")
    return cache, first, second


def _arts(run: Run) -> dict[str, dict]:
    return {a["id"]: a for a in run.manifest["artifacts"]}


def test_cold_run_prints_only_mpks_own_lines(runs: tuple[Path, Run, Run]) -> None:
    """No torch log records, ExecuTorch's native cpuinfo lines, torchao load failures or Python warnings."""
    _, first, _ = runs
    assert first.code == 0, first.stderr
    noise = [
        ln
        for ln in first.stderr.splitlines()
        if ln.startswith(("[", "W1", "I1", "E1", "Traceback"))
        or "Warning" in ln
        or "Failed to load" in ln
        or "site-packages" in ln
    ]
    assert noise == [], noise
    assert "export executorch-int8" in first.stderr and "verify onnx-int8" in first.stderr


def test_cached_rerun_imports_no_torch_and_repeats_the_manifest(runs: tuple[Path, Run, Run]) -> None:
    _, first, second = runs
    assert first.code == 0 and second.code == 0, second.stderr
    assert "torch" in first.imported and "onnxruntime" in first.imported
    # every answer came from the cache: no model load, no runtime, no data library, no export
    assert second.imported == [], second.imported
    a, b = _arts(first), _arts(second)
    assert set(a) == set(b) == {"executorch-int8", "onnx-int8"}
    for art_id in a:
        assert a[art_id]["cached"] is False and b[art_id]["cached"] is True
        for k in ("sha256", "size_bytes", "compressed_size_bytes", "verification", "delegation", "details"):
            assert a[art_id][k] == b[art_id][k], (art_id, k)
    for k in ("model", "inputs", "outputs", "data", "recipe", "compression"):
        assert first.manifest[k] == second.manifest[k], k


def test_cached_rerun_writes_the_same_reference(runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    cache, first, _ = runs
    out = tmp_path / "pkg"
    again = mpk_package(cache, out)
    assert again.code == 0, again.stderr
    ref = np.load(out / "reference.npz")
    assert ref["input:image"].shape == (16, 1, 1, 8, 8) and ref["labels"].shape == (16,)
    assert first.manifest["reference"]["samples"] == again.manifest["reference"]["samples"] == 16
    # the reference outputs are what fp32 torch says for these inputs (recomputed here, in this process)
    import torch

    from packager.models import load_model

    with torch.no_grad():
        want = load_model("digits-cnn").module(torch.from_numpy(ref["input:image"][:, 0])).numpy()
    np.testing.assert_allclose(ref["output:logits"][:, 0], want, atol=1e-5)


def test_tampered_cache_entry_is_never_used(runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    cache, first, _ = runs
    work = _fresh_cache(tmp_path / "cache")
    shutil.copytree(cache / "artifacts", work / "artifacts")
    shutil.copytree(cache / "verifications", work / "verifications")
    good = _arts(first)["onnx-int8"]["sha256"]
    tampered = [p for p in (work / "artifacts").rglob("*.onnx") if sha256_path(p) == good]
    assert len(tampered) == 1
    data = bytearray(tampered[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered[0].write_bytes(bytes(data))

    run = mpk_package(work, tmp_path / "pkg")
    assert run.code == 0, run.stderr
    arts = _arts(run)
    assert arts["executorch-int8"]["cached"] is True
    assert arts["onnx-int8"]["cached"] is False  # rebuilt, not copied
    shipped = tmp_path / "pkg" / arts["onnx-int8"]["path"]
    assert sha256_path(shipped) == arts["onnx-int8"]["sha256"]
    assert arts["onnx-int8"]["verification"]["status"] == "passed"
    # the damaged entry was replaced by the rebuilt artifact
    assert [p for p in (work / "artifacts").rglob("*.onnx") if sha256_path(p) == arts["onnx-int8"]["sha256"]]


def test_cached_verification_follows_the_tolerances(runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    """A verification is reused only for the tolerances it was checked against."""
    cache, first, _ = runs
    recipe = tmp_path / "strict.yaml"
    recipe.write_text(yaml.safe_dump({"model": "digits-cnn", "tolerances": {"int8": {"min_cosine": 0.99999999}}}))
    strict = mpk_package(cache, tmp_path / "pkg", "--recipe", str(recipe))
    assert strict.code == EXIT_CHECK_FAILED, strict.stderr
    for a in strict.manifest["artifacts"]:
        assert a["cached"] is True
        assert a["verification"]["status"] == "failed" and "misses min_cosine" in a["verification"]["reason"]
    again = mpk_package(cache, tmp_path / "pkg2")
    assert again.code == 0 and again.imported == [], again.stderr
    assert _arts(again)["onnx-int8"]["verification"] == _arts(first)["onnx-int8"]["verification"]


def test_no_cache_builds_and_verifies_afresh_and_stores_nothing(tmp_path: Path) -> None:
    cache = _fresh_cache(tmp_path / "cache")
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    run = mpk_package(cache, tmp_path / "pkg", "--backends", "onnx", "--no-cache")
    assert run.code == 0, run.stderr
    assert "onnxruntime" in run.imported and all(a["cached"] is False for a in run.manifest["artifacts"])
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before


def test_stale_model_facts_are_caught_when_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached model facts that name other weights than the model loads are dropped, and the run starts over."""
    cache = _fresh_cache(tmp_path / "cache")
    monkeypatch.setenv("MPK_CACHE_DIR", str(cache))
    first = package(Recipe(model="digits-cnn", backends=("onnx",), schemes=("none",), out=str(tmp_path / "a")))
    real = first.manifest["model"]["sha256"]
    [record] = list((cache / "model-info").glob("*.json"))
    rec = json.loads(record.read_text())
    assert rec["value"]["sha256"] == real
    rec["value"]["sha256"] = "0" * 64
    record.write_text(json.dumps(rec))

    notes: list[str] = []
    second = package(
        Recipe(model="digits-cnn", backends=("onnx",), schemes=("int8",), out=str(tmp_path / "b")),
        progress=lambda event, text, _s: notes.append(text) if event == "note" else None,
    )
    assert second.manifest["model"]["sha256"] == real
    assert second.manifest["artifacts"][0]["verification"]["status"] == "passed"
    assert any("cached model info" in n for n in notes), notes
    assert json.loads(record.read_text())["value"]["sha256"] == real
