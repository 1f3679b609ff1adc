"""Compression end to end on the built-in digits-cnn: real pruning, training, PT2E int8, ExecuTorch programs.

Accuracy is real test-split accuracy of the exported ``.pte`` run by the ExecuTorch runtime.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from packager.compress.distill import DistillConfig
from packager.compress.recipe_io import apply_compression, export_quantized, parse_compression
from packager.compress.unstructured import measure_sizes

# Adam at the digits model's own training rate; crops of an 8x8 digit shift it too far to help
DISTILL = {"epochs": 20, "optimizer": "adam", "lr": 0.003, "batch_size": 64, "augment": "none"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # 2 shared cores: one thread is several times faster than torch's oversubscribed default here
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def digits():
    from packager.data import load_dataset
    from packager.models import load_model

    m = load_model("digits-cnn")
    train = load_dataset("builtin", m, count=None, purpose="calibration")
    calib = dataclasses.replace(train, samples=train.samples[:64])
    test = load_dataset("builtin", m, count=None, purpose="evaluation")
    assert test.labels is not None
    return m, train, calib, test


def _accuracy(run, test) -> float:
    pairs = zip(test.samples, test.labels, strict=True)
    return float(np.mean([np.asarray(run(s)).reshape(-1).argmax() == y for s, y in pairs]))


def _torch_accuracy(module, test) -> float:
    with torch.no_grad():
        return _accuracy(lambda s: module(torch.from_numpy(s[0])).numpy(), test)


def _pte_accuracy(path: Path, test) -> float:
    from packager.export import get_exporter

    sess = get_exporter("executorch").open(path)
    return _accuracy(lambda s: sess.run(s)[0], test)


@pytest.fixture(scope="module")
def pruned(digits):
    """digits-cnn with half its channels pruned, then distilled from the original (shared: ~5 s of training)."""
    model, train, calib, _ = digits
    cfg = parse_compression({"structured": {"ratio": 0.5}, "distill": DISTILL})
    return apply_compression(model, cfg, calib, training=train, progress=False)


def test_prune_half_distill_int8_keeps_accuracy_with_under_half_params(digits, pruned, tmp_path: Path) -> None:
    from packager.export import get_exporter

    model, _, calib, test = digits
    fp32_acc = _torch_accuracy(model.module, test)
    rep = pruned.report["structured"]
    assert rep["params_after"] < 0.5 * rep["params_before"]
    assert pruned.report["parameters"]["compressed"] == rep["params_after"]
    assert pruned.report["distill"]["epochs_run"] == 20 and pruned.report["distill"]["stopped_by"] == "epochs"
    art = get_exporter("executorch").export(pruned.model, "int8", calib, tmp_path)
    assert art.delegation and art.delegation["delegated_ops"] > 0
    int8_acc = _pte_accuracy(art.path, test)
    assert int8_acc >= fp32_acc - 0.01, (fp32_acc, int8_acc)
    assert sum(p.numel() for p in model.module.parameters()) == rep["params_before"]  # original untouched
    assert pruned.model.sha256 != model.sha256  # new cache key: never served the unpruned artifact


def test_unstructured_half_zeros_same_dense_size_smaller_zstd(digits, tmp_path: Path) -> None:
    from packager.export import get_exporter

    model, _, calib, _ = digits
    c = apply_compression(model, parse_compression({"unstructured": {"amount": 0.5}}), calib, progress=False)
    assert c.report["unstructured"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    ex = get_exporter("executorch")
    dense = measure_sizes(ex.export(model, "fp32", None, tmp_path / "dense").path)
    sparse = measure_sizes(ex.export(c.model, "fp32", None, tmp_path / "sparse").path)
    assert abs(sparse.dense_bytes - dense.dense_bytes) <= 0.01 * dense.dense_bytes
    assert sparse.compressed_bytes < 0.85 * dense.compressed_bytes


def test_sensitivity_names_layers_sorted_and_mixed_precision_exports(digits, tmp_path: Path) -> None:
    from packager.compress.sensitivity import LayerSensitivity, format_table

    model, _, calib, test = digits
    # an SNR budget no full-int8 model reaches forces the most sensitive layer back to float
    cfg = parse_compression({"mixed_precision": {"min_snr_db": 90, "max_float_layers": 1}})
    small = dataclasses.replace(calib, samples=calib.samples[:16])
    c = apply_compression(model, cfg, small, progress=False)
    rows = [LayerSensitivity(**r) for r in c.report["sensitivity"]]
    assert sorted(r.layer for r in rows) == ["0", "2", "6", "8"]  # every Conv/Linear of the Sequential
    assert [r.snr_db for r in rows] == sorted(r.snr_db for r in rows)  # most sensitive first
    assert all(0 < r.snr_db < 999 and r.cosine > 0.9 for r in rows)
    assert format_table(rows).splitlines()[2].startswith(rows[0].layer)
    plan = c.report["mixed_precision"]
    assert [s["keep_float"] for s in plan["steps"]] == [[], [rows[0].layer]]
    assert plan["keep_float"] == [rows[0].layer] and plan["met"] is False  # capped by max_float_layers
    assert plan["steps"][1]["snr_db"] > plan["steps"][0]["snr_db"]
    art = export_quantized(c, tmp_path)
    assert art is not None and art.scheme == "int8-mixed"
    assert _pte_accuracy(art.path, test) >= _torch_accuracy(model.module, test) - 0.02


def test_qat_after_pruning_exports_int8(digits, pruned, tmp_path: Path) -> None:
    from packager.compress.qat import QATConfig, qat_int8
    from packager.compress.recipe_io import CompressedModel, frozen_quantized

    model, train, _, test = digits
    x = torch.from_numpy(np.concatenate([s[0] for s in train.samples]))
    cfg = QATConfig(train=DistillConfig(**{**DISTILL, "epochs": 2, "lr": 0.0005}))
    q, rep = qat_int8(pruned.model.module, model.example_inputs, x, teacher=model.module, cfg=cfg, progress=False)
    assert rep.epochs_run == 2 and rep.steps == 2 * -(-len(train) // 64)
    assert any("quantize_per" in str(n.target) for n in q.graph.nodes)  # real int8 q/dq, not a float model
    art = export_quantized(CompressedModel(pruned.model, {}, frozen_quantized(q), "int8-qat"), tmp_path)
    assert art is not None and art.path.suffix == ".pte" and art.scheme == "int8-qat"
    assert art.delegation and art.delegation["delegated_ops"] > 0
    assert _pte_accuracy(art.path, test) >= _torch_accuracy(model.module, test) - 0.015


def test_tune_grid_pareto_and_recipe_replays_to_same_result(tmp_path: Path) -> None:
    from packager.compress.tune import TuneConfig, format_result, replay_config, run_tune, save_recipe

    cfg = TuneConfig(
        model="digits-cnn",
        target="channels",
        amounts=(0.0, 0.5),
        schemes=("int8",),
        floor={"top1_agreement": 0.9},
        distill=DistillConfig(**DISTILL, samples=256),
        calibration_count=32,
        eval_count=50,
        latency_iters=5,
    )
    res = run_tune(cfg, tmp_path / "trials", progress=False)
    assert [t.status for t in res.trials] == ["ok", "ok"]
    # the floor is checked on the held-out test split, never on what pruning or distillation saw
    assert res.held_out_samples == 450 and "test split" in res.held_out
    assert any("overlaps the held-out" in n for n in res.notes)
    assert res.pareto and res.chosen is not None and res.chosen.meets_floor
    small = res.trials[1]
    assert small.size_bytes < res.trials[0].size_bytes and small.parameters < res.trials[0].parameters
    assert res.chosen is small  # smallest meeting the floor
    table = format_result(res)
    assert "chosen (size, top1_agreement>=0.9): prune 0.5 + int8" in table
    recipe = save_recipe(res, tmp_path / "recipe.yaml")
    assert recipe["compression"]["structured"]["ratio"] == 0.5 and recipe["schemes"] == ["int8"]
    again = run_tune(replay_config(tmp_path / "recipe.yaml", latency_iters=5), tmp_path / "replay", progress=False)
    [t] = again.trials
    assert (t.prune, t.scheme, t.parameters, t.size_bytes) == (
        small.prune,
        small.scheme,
        small.parameters,
        small.size_bytes,
    )
    assert (t.top1_agreement, t.accuracy) == (small.top1_agreement, small.accuracy)
    assert Path(t.artifact).read_bytes() == Path(small.artifact).read_bytes()


def test_tune_search_finds_a_mac_cut_under_the_floor_and_names_what_limited_it(tmp_path: Path) -> None:
    """Search mode on digits: sensitivity once, bisection over MAC reductions, held-out floor, the chosen plan
    exported; the saved recipe replays through mpk package's Recipe to the same pruned model."""
    import yaml

    from packager.compress.tune import TuneConfig, format_result, replay_config, run_tune, save_recipe

    cfg = TuneConfig(
        model="digits-cnn",
        target="macs",
        amounts=(0.2, 0.5, 0.8, 0.95),
        schemes=("fp32",),
        floor={"top1_agreement": 0.97},
        sensitivity_ratios=(0.25, 0.5, 0.75),
        calibration_count=64,
        latency_iters=3,
        budget_seconds=300,
    )
    res = run_tune(cfg, tmp_path / "t", progress=False)
    search = [t for t in res.trials if t.scheme == "pytorch-fp32"]
    assert search and all(t.status == "ok" for t in search)
    assert res.sensitivity and {r["group"] for r in res.sensitivity} >= {"0", "2"}
    assert res.chosen is not None and res.chosen.meets_floor and res.chosen.mac_reduction >= 0.2
    # amounts that round (channels in multiples of 8) to the chosen plan tie with it; any bigger cut missed
    assert all(t.top1_agreement < 0.97 for t in search if t.mac_reduction > res.chosen.mac_reduction)
    assert res.limiting, "a failing plan beyond the chosen one names the groups it had to cut further"
    table = format_result(res)
    assert "limited by" in table and "chosen (top1_agreement>=0.97 on held-out)" in table
    exported = [t for t in res.trials if t.scheme == "fp32"]
    assert [t.prune for t in exported] == [0.0, res.chosen.prune]
    assert exported[1].size_bytes < exported[0].size_bytes
    recipe = save_recipe(res, tmp_path / "r.yaml")
    assert recipe["compression"]["structured"]["per_layer"] == res.chosen.per_layer
    [replayed] = run_tune(replay_config(tmp_path / "r.yaml", latency_iters=3), tmp_path / "re", progress=False).trials
    assert (replayed.parameters, replayed.top1_agreement) == (exported[1].parameters, exported[1].top1_agreement)
    # the replay reads the recipe like mpk package: a misspelt key is refused, with its path
    bad = yaml.safe_load((tmp_path / "r.yaml").read_text())
    bad["compression"]["structured"]["ratoi"] = 0.1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    from mpk.errors import ConfigError

    with pytest.raises(ConfigError, match=r"compression\.structured\.ratoi"):
        replay_config(tmp_path / "bad.yaml")


def test_replay_applies_every_compression_section(tmp_path: Path) -> None:
    """A recipe with only an unstructured section used to be replayed as 'prune 0' (the section dropped)."""
    import yaml

    from packager.compress.tune import replay_config, run_tune

    spec = {
        "model": "digits-cnn",
        "backends": ["executorch"],
        "schemes": ["fp32"],
        "calibration_count": 32,
        "compression": {"unstructured": {"amount": 0.6, "scope": "global"}},
    }
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(spec))
    cfg = replay_config(tmp_path / "u.yaml", latency_iters=2)
    assert cfg.compression is not None and cfg.compression.unstructured is not None
    assert cfg.calibration_count == 32 and cfg.eval_count == 96  # the Recipe's defaults, as mpk package's
    [t] = run_tune(cfg, tmp_path / "t", progress=False).trials
    assert t.status == "ok" and t.prune == 0.6
    from packager.compress.unstructured import measure_sizes

    unpruned = run_tune(
        replay_config(_write(tmp_path / "n.yaml", {**spec, "compression": None}), latency_iters=2),
        tmp_path / "n",
        progress=False,
    ).trials[0]
    assert measure_sizes(Path(t.artifact)).compressed_bytes < measure_sizes(Path(unpruned.artifact)).compressed_bytes
    # a qat section yields its own already-int8 artifact in the replay, as in mpk package
    qat = {"epochs": 1, "optimizer": "adam", "lr": 0.0005, "batch_size": 64, "augment": "none"}
    cfg = replay_config(_write(tmp_path / "q.yaml", {**spec, "compression": {"qat": qat}}), latency_iters=2)
    trials = run_tune(cfg, tmp_path / "q", progress=False).trials
    assert [t.scheme for t in trials] == ["fp32", "int8-qat"] and all(t.status == "ok" for t in trials)
    assert trials[1].size_bytes < 0.5 * trials[0].size_bytes and trials[1].top1_agreement > 0.9


def _write(path: Path, spec: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path
