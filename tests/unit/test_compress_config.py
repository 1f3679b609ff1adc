"""Bad compression input is refused before any work, with exit code 2 and a message naming the value."""

from __future__ import annotations

import pytest
import torch.nn as nn
from click.testing import CliRunner

from mpk.errors import ConfigError, UsageError
from packager.compress import check_ratio
from packager.compress.recipe_io import CompressionConfig, parse_compression
from packager.compress.structured import StructuredPruneConfig, check_structured
from packager.compress.unstructured import UnstructuredPruneConfig, prune_unstructured


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 12, 3), nn.ReLU(), nn.Conv2d(12, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


@pytest.mark.parametrize("value", [0.0, 0, 0.5, 0.999])
def test_ratio_accepts_zero_and_below_one(value: float) -> None:
    assert check_ratio(value, "ratio") == float(value)


@pytest.mark.parametrize("value", [1, 1.0, -0.1, 1.5, "half", float("nan")])
def test_ratio_refuses_one_and_outside(value: object) -> None:
    with pytest.raises(UsageError) as ei:
        check_ratio(value, "structured ratio")
    assert ei.value.exit_code == 2
    assert repr(value) in ei.value.message


def test_unknown_layer_suggests_nearest() -> None:
    net = _net()
    with pytest.raises(UsageError, match=r"unknown layer '4x'.*did you mean '4'") as ei:
        check_structured(net, StructuredPruneConfig(ratio=0.25, ignore=["4x"]))
    assert ei.value.exit_code == 2
    with pytest.raises(UsageError, match=r"unknown layer 'conv'"):
        prune_unstructured(net, UnstructuredPruneConfig(amount=0.5, layers=["conv"]))


def test_ratio_that_empties_a_layer_is_refused_naming_value_and_layer() -> None:
    # conv "0" has 12 channels: 0.5 keeps 6, and round_to=8 rounds 6 down to 0
    with pytest.raises(UsageError, match=r"ratio 0.5 would remove every output channel of layer '0' \(12 channels"):
        check_structured(_net(), StructuredPruneConfig(ratio=0.5, round_to=8))
    # the same ratio without rounding is fine, and the head (last Linear) is ignored by default
    assert check_structured(_net(), StructuredPruneConfig(ratio=0.5, round_to=None)) == ["4"]


def test_parse_reports_every_problem_with_its_path() -> None:
    raw = {
        "structured": {"ratio": 1.0, "importnce": "l1"},
        "unstructured": {"amount": 2},
        "distil": {"epochs": 1},
        "distill": {"epochs": -1, "optimizer": "rmsprop"},
    }
    with pytest.raises(ConfigError) as ei:
        parse_compression(raw, "r.yaml")
    text = "\n".join(ei.value.problems)
    assert "compression.structured.importnce: unknown key; did you mean 'importance'?" in text
    assert "compression.distil: unknown key; did you mean 'distill'?" in text
    assert "compression.unstructured: unstructured amount must be in [0, 1), got 2" in text
    assert "epochs must be an integer >= 0, got -1" in text and "'rmsprop'" in text
    assert ei.value.exit_code == 2


def test_config_round_trips_through_yaml_form() -> None:
    raw = {
        "structured": {"ratio": 0.3, "importance": "taylor", "global": True, "round_to": 16},
        "distill": {"epochs": 2, "augment": "crop", "samples": 256},
        "mixed_precision": {"min_snr_db": 25},
    }
    cfg = parse_compression(raw)
    assert cfg.structured is not None and cfg.structured.global_ and cfg.structured.round_to == 16
    assert parse_compression(cfg.to_dict()) == cfg
    assert parse_compression(None) == CompressionConfig()
    with pytest.raises(ConfigError, match="keep one"):
        parse_compression({"qat": {"epochs": 1}, "mixed_precision": {"min_snr_db": 20}})


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "digits-cnn", "--prune", "0,1", "--target", "channels"], "prune[1] must be in [0, 1), got 1.0"),
        (["--model", "digits-cnn", "--floor", "top1_agrement=0.9"], "did you mean 'top1_agreement'"),
        (["--model", "digits-cnn", "--floor", "accuracy"], "expected METRIC=VALUE"),
        ([], "--model is required"),
    ],
)
def test_tune_cli_refuses_bad_flags_with_exit_2(args: list[str], needle: str) -> None:
    from mpk.cli import main

    res = CliRunner().invoke(main, ["tune", *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_new_sections_and_keys_parse_and_bad_values_are_refused_with_paths() -> None:
    cfg = parse_compression(
        {
            "structured": {"ratio": 0.15, "target": "macs", "importance": "energy", "sensitivity_ratios": [0.5, 0.25]},
            "recovery": {"bn": "relative", "bn_blend": 0.5},
            "distill": {"data": "both", "augment": "strong", "synthetic_count": 16, "guard": False},
        }
    )
    assert cfg.structured is not None and cfg.structured.allocated
    assert cfg.structured.sensitivity_ratios == (0.25, 0.5)
    assert parse_compression(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as ei:
        parse_compression(
            {
                "structured": {"ratio": 0.2, "target": "flops"},
                "recovery": {"bn": "relativ", "refitt": True},
                "unstructured": {"threshold": -0.1},
                "distill": {"data": "noise"},
            },
            "r.yaml",
        )
    text = "\n".join(ei.value.problems)
    assert "compression.structured: unknown target 'flops'" in text
    assert "compression.recovery.refitt: unknown key; did you mean 'refit'?" in text
    assert "compression.unstructured: unstructured threshold must be a number >= 0, got -0.1" in text
    assert "data must be images, synthetic or both, got 'noise'" in text
    with pytest.raises(ConfigError, match="cannot be combined with global"):
        parse_compression({"structured": {"ratio": 0.2, "target": "macs", "global": True}})


def test_threshold_zeroes_exactly_the_small_weights() -> None:
    net = _net()
    small = sum(int((m.weight.abs() < 0.05).sum()) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    rep = prune_unstructured(net, UnstructuredPruneConfig(threshold=0.05))
    assert rep.zero_params == small > 0 and rep.scope == "threshold"


def test_package_flags_override_the_recipe_section() -> None:
    from packager.compress.recipe_io import compression_overrides

    base = {"structured": {"ratio": 0.5, "importance": "l2"}, "distill": {"epochs": 3}}
    out = compression_overrides(base, prune=0.3, scope="global", distill_minutes=1.5)
    assert out == {
        "structured": {"ratio": 0.3, "importance": "l2", "global": True},
        "distill": {"epochs": 3, "max_seconds": 90.0},
    }
    assert base["structured"]["ratio"] == 0.5  # the recipe's own mapping is not touched
    assert compression_overrides(None, prune=0.2, target="macs") == {"structured": {"ratio": 0.2, "target": "macs"}}
    assert compression_overrides(None) is None  # nothing given, nothing made
    assert compression_overrides(None, threshold=0.01) == {"unstructured": {"threshold": 0.01}}
    assert compression_overrides(None, prune=0.4, method="unstructured", scope="local") == {
        "unstructured": {"amount": 0.4, "scope": "local"}
    }
    assert parse_compression(compression_overrides(None, distill_minutes=2)).distill.max_seconds == 120.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--prune", "1.2"], "--prune must be in [0, 1), got 1.2"),
        (["--prune-threshold", "-0.5"], "--prune-threshold must be >= 0, got -0.5"),
        (["--prune", "0.3", "--prune-method", "structured", "--prune-threshold", "0.1"], "unstructured cut"),
        (["--distill-minutes", "0"], "--distill-minutes must be > 0"),
        (["--prune-scope", "global"], "need --prune RATIO"),
        (["--prune", "0.3", "--prune-method", "unstructured", "--prune-target", "macs"], "applies to structured"),
    ],
)
def test_package_refuses_bad_prune_flags_with_exit_2_before_any_work(tmp_path, args: list[str], needle: str) -> None:
    from mpk.cli import main

    out = tmp_path / "pkg"
    res = CliRunner().invoke(main, ["package", "--model", "digits-cnn", "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_package_help_lists_the_prune_flags() -> None:
    from mpk.cli import main

    res = CliRunner().invoke(main, ["package", "--help"])
    assert res.exit_code == 0
    for flag in (
        "--prune ",
        "--prune-method",
        "--prune-scope",
        "--prune-target",
        "--prune-threshold",
        "--distill-minutes",
    ):
        assert flag in res.output, flag


def test_package_dry_run_shows_the_flags_in_the_resolved_recipe() -> None:
    import yaml

    from mpk.cli import main

    res = CliRunner().invoke(
        main, ["package", "--model", "digits-cnn", "--prune", "0.3", "--distill-minutes", "2", "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    comp = yaml.safe_load(res.output)["compression"]
    assert comp["structured"]["ratio"] == 0.3 and comp["distill"]["max_seconds"] == 120.0
