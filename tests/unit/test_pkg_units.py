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
    assert any("top1_agreement 0.5 misses min_top1_agreement 0.95" in x for x in missed)
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
    cache.exporter_code_hash.cache_clear()
    monkeypatch.setattr(cache, "exporter_code_hash", lambda: "different-exporter-source")
    after = cache.make_key(kind="artifact", model="m", backend="executorch", scheme="int8")
    assert before != after
