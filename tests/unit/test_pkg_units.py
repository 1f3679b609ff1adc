"""Packager pipeline units: recipe validation, model/data loading errors, metrics. Real files, real torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mpk.cli import main
from mpk.errors import EXIT_MODEL, EXIT_USAGE, ConfigError, DataError, ModelError, UnknownNameError, UsageError
from packager.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]


# --- recipe ------------------------------------------------------------------------------------------------


def test_recipe_yaml_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("model: digits-cnn\nbackendz: [onnx]\neval_count: lots\ntolerances:\n  int8: {min_cosin: 0.9}\n")
    with pytest.raises(ConfigError) as ei:
        Recipe.build(f)
    msg = ei.value.format_message()
    assert "backendz: unknown key; did you mean 'backends'?" in msg
    assert "eval_count: expected an integer" in msg
    assert "tolerances.int8.min_cosin: unknown tolerance; did you mean 'min_cosine'?" in msg
    assert ei.value.exit_code == EXIT_USAGE


def test_flags_override_yaml(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("model: digits-cnn\nbackends: [executorch]\neval_count: 10\n")
    r = Recipe.build(f, backends="onnx", eval_count=None)
    assert r.backends == ("onnx",) and r.eval_count == 10
    assert r.combinations() == [("onnx", "fp32"), ("onnx", "int8")]


def test_misspelt_backend_and_scheme_suggest_nearest() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown backend 'onxx'; did you mean 'onnx'\?"):
        Recipe(model="digits-cnn", backends=("onxx",))
    with pytest.raises(UnknownNameError, match=r"unknown scheme 'int9'; did you mean 'int8'\?"):
        Recipe(model="digits-cnn", schemes=("int9",))


def test_impossible_combination_lists_what_backend_can_do() -> None:
    with pytest.raises(UsageError) as ei:
        Recipe(model="digits-cnn", backends=("coreml",), schemes=("int8-dynamic",))
    assert "it supports: fp32, fp16, int8, palettize4" in ei.value.format_message()


def test_dry_run_prints_resolved_yaml_and_imports_no_torch() -> None:
    code = (
        "import sys\nfrom mpk.cli import main\n"
        "args = ['package', '--model', 'digits-cnn', '--backends', 'onnx', '--quantize', 'int8', '--dry-run']\n"
        "try:\n    main(args)\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'dry-run imported torch'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "model: digits-cnn" in r.stdout and "- onnx" in r.stdout and "- int8" in r.stdout


def test_backends_command_imports_no_torch() -> None:
    code = (
        "import sys\nfrom mpk.cli import main\n"
        "try:\n    main(['backends', '--json'])\nexcept SystemExit as e:\n    assert e.code in (0, None)\n"
        "heavy = [m for m in ('torch', 'executorch', 'coremltools', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert "palettize4" in data["coreml"]["schemes"] and data["executorch"]["needs_calibration"] == ["int8"]


@pytest.mark.parametrize("cmd", ["package", "inspect", "backends"])
def test_help(cmd: str) -> None:
    r = CliRunner().invoke(main, [cmd, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


# --- models ------------------------------------------------------------------------------------------------


def test_input_shape_parsing() -> None:
    from packager.models import parse_input_shapes

    s = parse_input_shapes(["image:batch=1..8x3x32x32"])["image"]
    assert s.shape == ("batch", 3, 32, 32) and s.dynamic == {"batch": (1, 8)}
    with pytest.raises(UsageError, match="bad dimension"):
        parse_input_shapes(["image:1xfoo"])


def test_model_spec_errors(tmp_path: Path) -> None:
    from packager.models import load_model

    with pytest.raises(UnknownNameError, match="did you mean 'digits-cnn'"):
        load_model("digits-cn")
    with pytest.raises(UsageError, match="model file not found"):
        load_model(str(tmp_path / "nope.py") + ":make")
    f = tmp_path / "m.py"
    f.write_text(
        "import torch\n"
        "def boom():\n    raise RuntimeError('weights missing')\n"
        "def notmod():\n    return 42\n"
        "def make():\n    return torch.nn.Linear(4, 2), (torch.zeros(1, 4),)\n"
        "def bare():\n    return torch.nn.Linear(4, 2)\n"
    )
    with pytest.raises(ModelError, match="the factory raised RuntimeError: weights missing") as ei:
        load_model(f"{f}:boom")
    assert ei.value.exit_code == EXIT_MODEL
    with pytest.raises(UsageError, match="did you mean 'make'"):
        load_model(f"{f}:mak")
    with pytest.raises(UsageError, match=r"expected an nn\.Module"):
        load_model(f"{f}:notmod")
    with pytest.raises(UsageError, match="cannot know the input shape"):
        load_model(f"{f}:bare")
    m = load_model(f"{f}:bare", input_shape=["x:1x4"])
    assert m.inputs[0].name == "x" and m.outputs[0].shape == (1, 2) and m.task == "classification"
    with pytest.raises(UsageError, match="cannot import module"):
        load_model("no_such_pkg_xyz.models:make")


def test_digits_cnn_is_accurate_and_hash_stable() -> None:
    import torch

    from packager.models import load_model
    from packager.models.builtin import digits_split

    a, b = load_model("digits-cnn"), load_model("digits-cnn")
    assert a.sha256 == b.sha256 and a.inputs[0].shape == (1, 1, 8, 8) and a.num_classes == 10
    _, _, xte, yte = digits_split()
    with torch.no_grad():
        acc = (a.module(torch.from_numpy(xte)).argmax(-1).numpy() == yte).mean()
    assert acc >= 0.95


# --- data --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from packager.models import load_model

    return load_model("digits-cnn")


def test_image_dir_errors(tmp_path: Path, digits) -> None:
    from packager.data import load_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images in"):
        load_dataset(str(empty), digits, count=4, purpose="calibration")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_dataset(str(bad), digits, count=4, purpose="calibration")


def test_image_dir_with_label_folders(tmp_path: Path, digits) -> None:
    from skimage import io

    from packager.data import load_dataset

    for label in (3, 7):
        (tmp_path / str(label)).mkdir()
        io.imsave(tmp_path / str(label) / "a.png", np.full((16, 16), 200, np.uint8), check_contrast=False)
    d = load_dataset(str(tmp_path), digits, count=None, purpose="evaluation")
    assert len(d) == 2 and d.samples[0][0].shape == (1, 1, 8, 8) and list(d.labels) == [3, 7]


def test_npz_shapes_checked(tmp_path: Path, digits) -> None:
    from packager.data import load_dataset

    good = tmp_path / "good.npz"
    np.savez(good, image=np.zeros((5, 1, 8, 8), np.float32), labels=np.arange(5))
    d = load_dataset(str(good), digits, count=3, purpose="evaluation")
    assert len(d) == 3 and d.samples[0][0].shape == (1, 1, 8, 8) and list(d.labels) == [0, 1, 2]
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, image=np.zeros((5, 1, 9, 9), np.float32))
    with pytest.raises(DataError, match=r"shape \(1, 1, 9, 9\), the model takes \(1, 1, 8, 8\)"):
        load_dataset(str(wrong), digits, count=3, purpose="evaluation")


def test_random_is_marked_synthetic_and_builtin_digits_has_labels(digits) -> None:
    from packager.data import load_dataset

    r = load_dataset("random", digits, count=4, purpose="calibration")
    assert r.synthetic and len(r) == 4
    ev = load_dataset("builtin", digits, count=None, purpose="evaluation")
    assert len(ev) == 450 and ev.labels is not None and not ev.synthetic


def test_efficientnet_builtin_views_are_disjoint() -> None:
    """Calibration and evaluation views use different scales, so no evaluation image was calibrated on."""
    from packager.data.builtin import _VIEWS

    assert not {v[0] for v in _VIEWS["evaluation"]} & {v[0] for v in _VIEWS["calibration"]}


# --- verify ------------------------------------------------------------------------------------------------


def test_metrics_and_tolerances() -> None:
    from packager.verify import check, compute_metrics, tolerances_for

    ref = [np.array([[[2.0, 1.0, 0.0]], [[0.0, 1.0, 2.0]]])]
    got = [np.array([[[1.9, 1.0, 0.1]], [[0.0, 2.5, 2.0]]])]
    m = compute_metrics(ref, got, classifier=True, labels=np.array([0, 1]))
    assert m["top1_agreement"] == 0.5 and m["fp32_accuracy"] == 0.5 and m["accuracy"] == 1.0
    assert m["max_abs_error"] == pytest.approx(1.5)
    assert compute_metrics(ref, ref, classifier=True)["snr_db"] == 200.0
    missed = check(m, tolerances_for("int8"))
    want = "top1_agreement 0.5 (on 2 of 2 with a clear fp32 top-1) misses min_top1_agreement 0.95"
    assert any(x.startswith(want) for x in missed)
    assert tolerances_for("int8", {"int8": {"min_cosine": 0.5}})["min_cosine"] == 0.5


def test_module_factory_and_pt2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digits) -> None:
    import torch

    from packager.models import load_model

    (tmp_path / "mpk_test_zoo.py").write_text(
        "import torch\ndef small():\n    return torch.nn.Sequential(torch.nn.Linear(3, 4)), (torch.zeros(1, 3),)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model("mpk_test_zoo:small")
    assert m.source == {"kind": "module", "spec": "mpk_test_zoo:small"} and m.outputs[0].shape == (1, 4)
    ep = torch.export.export(digits.module, digits.example_inputs)
    torch.export.save(ep, tmp_path / "digits.pt2")
    p = load_model(str(tmp_path / "digits.pt2"))
    assert p.exported_program is not None and p.source["kind"] == "pt2"
    assert p.inputs[0].shape == (1, 1, 8, 8) and p.num_classes == 10


def test_data_from_python_callable(tmp_path: Path, digits) -> None:
    from packager.data import load_dataset

    f = tmp_path / "feed.py"
    f.write_text(
        "import numpy as np\n"
        "def frames(count):\n    return np.ones((count or 3, 1, 8, 8), np.float32), np.arange(count or 3)\n"
        "def bad(count):\n    raise OSError('camera unplugged')\n"
    )
    d = load_dataset(f"{f}:frames", digits, count=5, purpose="evaluation")
    assert len(d) == 5 and list(d.labels) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="camera unplugged"):
        load_dataset(f"{f}:bad", digits, count=5, purpose="calibration")


def test_cache_key_changes_when_exporter_code_changes(monkeypatch) -> None:
    """A fix in an exporter must not be answered from the cache with an artifact the old code made."""
    from packager import cache

    before = cache.make_key(kind="artifact", model="m", backend="executorch", scheme="int8")
    monkeypatch.setattr(cache, "exporter_code_hash", lambda: "different-exporter-source")
    after = cache.make_key(kind="artifact", model="m", backend="executorch", scheme="int8")
    assert before != after


# --- one parse of the recipe, typed values, cache integrity ---------------------------------------------------


def test_recipe_holds_compression_as_one_typed_config() -> None:
    """The ``compression:`` mapping is parsed once, into the config the pipeline consumes; YAML round-trips."""
    from packager.compress.recipe_io import CompressionConfig, parse_compression

    raw = {"structured": {"ratio": 0.25}, "distill": {"epochs": 1, "samples": 40}}
    r = Recipe.from_dict({"model": "digits-cnn", "compression": raw})
    assert isinstance(r.compression, CompressionConfig) and r.compression == parse_compression(raw)
    assert r.compression.structured.ratio == 0.25 and r.compression.distill.samples == 40
    again = Recipe.from_dict({**r.to_dict(), "model": "digits-cnn"})
    assert again.compression == r.compression and again == r
    assert Recipe(model="digits-cnn", compression={}).compression is None  # nothing to apply
    with pytest.raises(ConfigError, match=r"compression\.structured\.ratoi: unknown key"):
        Recipe(model="digits-cnn", compression={"structured": {"ratoi": 0.2}})


def test_binary_or_unreadable_recipe_is_one_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_bytes(b"model: digits-cnn\n\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="not UTF-8 text") as ei:  # mpk/yamlio.py, as for every YAML mpk reads
        Recipe.build(f)
    assert ei.value.exit_code == EXIT_USAGE
    with pytest.raises(UsageError, match="is a directory, not a file"):
        Recipe.build(tmp_path)


def test_dataset_hash_and_head() -> None:
    from packager.types import Dataset

    rng = np.random.default_rng(0)
    samples = [(rng.standard_normal((1, 3)).astype(np.float32),) for _ in range(5)]
    d = Dataset(samples, "x", labels=np.arange(5))
    h = d.head(3)
    assert len(h) == 3 and list(h.labels) == [0, 1, 2] and h.sha256 != d.sha256
    assert Dataset(samples[:3], "y").sha256 == h.sha256  # samples only: source and labels are not data
    assert h.labels_sha256 != d.labels_sha256 and Dataset(samples, "z").labels_sha256 is None


def test_cache_records_and_arrays_are_checked(tmp_path: Path) -> None:
    from packager.cache import Cache
    from packager.manifest import sha256_path

    c = Cache(tmp_path, sha256=sha256_path)
    c.put_record("kind", "k1", {"a": 1})
    assert c.record("kind", "k1") == {"a": 1}
    (tmp_path / "kind" / "k1.json").rename(tmp_path / "kind" / "k2.json")
    assert c.record("kind", "k2") is None  # stored under another key: not believed
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 1), np.float32)]
    c.put_arrays("refs", "r", arrays)
    got = c.arrays("refs", "r")
    assert got is not None and all(np.array_equal(a, b) for a, b in zip(got, arrays, strict=True))
    with np.load(tmp_path / "refs" / "r.npz") as z:
        parts = {k: z[k] for k in z.files}
    parts["a0"] = parts["a0"] + 1  # a silently different reference must be a miss
    np.savez(tmp_path / "refs" / "r.npz", **parts)
    assert c.arrays("refs", "r") is None
    off = Cache(tmp_path, sha256=sha256_path, enabled=False)
    off.put_record("kind", "k3", {"a": 1})
    assert off.record("kind", "k1") is None and not (tmp_path / "kind" / "k3.json").exists()


def test_artifact_cache_checks_sha256_of_what_it_hands_back(tmp_path: Path) -> None:
    from packager.cache import ArtifactCache
    from packager.manifest import sha256_path
    from packager.types import ExportedArtifact, TensorSpec

    src = tmp_path / "build"
    src.mkdir()
    (src / "m.onnx").write_bytes(b"model bytes " * 100)
    art = ExportedArtifact("onnx", "fp32", src / "m.onnx", inputs=[TensorSpec("x", (1, 3))])
    cache = ArtifactCache(tmp_path / "cache", sha256=sha256_path)
    cache.put("k", art, src, {"m.onnx": sha256_path(src / "m.onnx")})
    hit = cache.get("k", tmp_path / "out1")
    assert hit is not None and hit.artifact.inputs == art.inputs
    assert hit.sha256 == {"m.onnx": sha256_path(src / "m.onnx")}
    stored = tmp_path / "cache" / "artifacts" / "k" / "files" / "m.onnx"
    stored.write_bytes(b"model bytes " * 99 + b"MODEL BYTES ")
    assert cache.get("k", tmp_path / "out2") is None
    assert not (tmp_path / "out2" / "m.onnx").exists() and not cache.contains("k")  # entry dropped


def test_model_handle_loads_once_and_refuses_other_weights(digits) -> None:
    from dataclasses import replace

    from packager.types import ModelHandle, StaleModelInfo

    calls = []

    def loader():
        calls.append(1)
        return digits

    h = ModelHandle(digits.info(), loader)
    assert not h.is_loaded and h.info.parameters == sum(p.numel() for p in digits.module.parameters())
    assert h.load() is digits and h.load() is digits and calls == [1]
    stale = ModelHandle(replace(digits.info(), sha256="0" * 64), loader)
    with pytest.raises(StaleModelInfo):
        stale.load()
    assert type(digits.info()).from_dict(digits.info().to_dict()) == digits.info()


def test_builtin_dataset_cache_returns_the_same_data(tmp_path: Path, digits) -> None:
    from packager.cache import Cache
    from packager.data import load_dataset
    from packager.manifest import sha256_path

    cache = Cache(tmp_path, sha256=sha256_path)
    fresh = load_dataset("builtin", digits, count=20, purpose="evaluation")
    first = load_dataset("builtin", digits, count=20, purpose="evaluation", cache=cache)
    again = load_dataset("builtin", digits, count=20, purpose="evaluation", cache=cache)
    assert list((tmp_path / "datasets").glob("*.npz"))
    for d in (first, again):
        assert d.sha256 == fresh.sha256 and np.array_equal(d.labels, fresh.labels) and d.source == fresh.source
    other = load_dataset("builtin", digits, count=10, purpose="evaluation", cache=cache)
    assert len(other) == 10 and other.sha256 == fresh.head(10).sha256


def test_native_stderr_is_quieted_only_when_asked(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from packager.host import native_stderr_quiet

    with native_stderr_quiet(True):
        os.write(2, b"[cpuinfo_utils.cpp:100] Reading file\n")
    with native_stderr_quiet(False):
        os.write(2, b"kept\n")
    err = capfd.readouterr().err
    assert "cpuinfo" not in err and "kept" in err


def test_cpu_fingerprint_names_the_simd_features() -> None:
    from packager.host import cpu_fingerprint

    fp = cpu_fingerprint()
    assert fp.split(":")[0]  # the machine
    if Path("/proc/cpuinfo").is_file() and "avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in fp


def test_a_child_that_ended_during_the_next_export_frees_the_slot(tmp_path: Path) -> None:
    """The pipeline's scheduling, with stand-in exports (no torch, no child processes): each job asks right before
    it would fork. Job a forks; job b's quantization outlasts a's child, so b may fork too; job c may not (b still
    runs); the last job never may (nothing is left to overlap it). Artifacts come back in job order."""
    from packager.cache import Cache
    from packager.export.base import Started
    from packager.host import Background
    from packager.output import staged
    from packager.pipeline import _build_all
    from packager.stages import ArtifactJob, Steps
    from packager.types import ExportedArtifact, ModelInfo

    info = ModelInfo(name="m", inputs=[], outputs=[], source={"kind": "test"}, sha256="0" * 64)
    ended: dict[str, bool] = {}
    answers: dict[str, bool] = {}

    def job(name: str, ends_before: str | None = None) -> ArtifactJob:
        def export(folder: Path) -> ExportedArtifact:
            (folder / f"{name}.bin").write_bytes(name.encode())
            return ExportedArtifact(backend=name, scheme="fp32", path=folder / f"{name}.bin")

        def start(folder: Path, overlap) -> Started:
            art = export(folder)
            if ends_before:
                ended[ends_before] = True  # that job's child finished while this one quantized
            answers[name] = overlap()
            if not answers[name]:
                return Started.now(art)
            ended.setdefault(name, False)
            return Started(lambda: art, running=True, done=lambda: ended[name])

        return ArtifactJob(backend=name, scheme="fp32", key=name, export=export, model=info,
                           tolerance_scheme="fp32", start=start)  # fmt: skip

    jobs = [job("a"), job("b", ends_before="a"), job("c"), job("d", ends_before="b")]
    verified: list[str] = []
    failures: list[dict[str, str]] = []

    def verify(b) -> dict[str, str]:
        verified.append(b.job.backend)
        return {"status": "passed"}

    with staged(tmp_path / "pkg", False) as staging:
        cache = Cache(enabled=False, sha256=lambda p: "x")
        built = _build_all(jobs, staging, cache, Background(), Steps(None), failures, verify, None)
        assert [b.job.backend for b, _ in built] == ["a", "b", "c", "d"] and failures == []
        assert all(b.artifact.path.read_bytes() == b.job.backend.encode() for b, _ in built)
    assert answers == {"a": True, "b": True, "c": False, "d": False}
    assert sorted(verified) == ["a", "b", "c", "d"] and verified.index("a") < verified.index("c")
