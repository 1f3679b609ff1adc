"""Budget rules: parsing with every problem reported by path, and per-metric precedence."""

from __future__ import annotations

import pytest

from mpk.errors import ConfigError
from runners.config import load_budgets
from runners.gate.budgets import parse_budgets, resolve
from tests.gate_factory import DEVICES_YAML


def test_misspelt_key_is_an_error_with_path_and_suggestion() -> None:
    rules, problems = parse_budgets(
        [{"device": "pixel-7", "p90ms": 20}, {"p50_ms": -1, "accuracy": {"cosin_min": 0.9}}]
    )
    assert rules == []
    assert problems[0].startswith("budgets[0].p90ms: unknown key 'p90ms'; did you mean 'p90_ms'?")
    assert any(p.startswith("budgets[1].p50_ms: expected a positive number, got -1") for p in problems)
    assert any(p.startswith("budgets[1].accuracy.cosin_min: unknown accuracy key") for p in problems)


@pytest.mark.parametrize(
    ("value", "ok"), [(20, True), (0.5, True), (0, False), ("fast", False), (True, False), (float("nan"), False)]
)
def test_values_must_be_positive_numbers(value: object, ok: bool) -> None:
    _, problems = parse_budgets([{"p90_ms": value}])
    assert (problems == []) is ok


def test_emulated_defaults_to_real_devices_only() -> None:
    rules, _ = parse_budgets([{"p90_ms": 10}, {"emulated": True, "p90_ms": 50}, {"emulated": "any", "size_mb": 9}])
    real = resolve(rules, device="pixel-7", artifact="onnx-fp32", model="m", emulated=False)
    emu = resolve(rules, device="pixel-7", artifact="onnx-fp32", model="m", emulated=True)
    assert real["p90_ms"].limit == 10 and emu["p90_ms"].limit == 50
    assert real["size_mb"].limit == emu["size_mb"].limit == 9


def test_most_specific_rule_wins_per_metric() -> None:
    rules, problems = parse_budgets(
        [
            {"device": "pixel-7", "artifact": "executorch-int8", "p90_ms": 25},  # exact/exact
            {"device": "*", "p90_ms": 100, "peak_mem_mb": 300},  # broad
            {"device": "pixel-*", "artifact": "*-int8", "p90_ms": 40},  # glob/glob
            {"device": "*", "p90_ms": 90},  # later ties with [1]
        ]
    )
    assert problems == []
    r = resolve(rules, device="pixel-7", artifact="executorch-int8", model="m", emulated=False)
    assert r["p90_ms"].limit == 25 and r["peak_mem_mb"].limit == 300
    r = resolve(rules, device="pixel-8", artifact="onnx-int8", model="m", emulated=False)
    assert r["p90_ms"].limit == 40
    r = resolve(rules, device="galaxy", artifact="onnx-fp32", model="m", emulated=False)
    assert r["p90_ms"].limit == 90 and r["p90_ms"].rule.index == 3


def test_load_budgets_merges_into_one_config_error(tmp_path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(DEVICES_YAML + "  - {device: pixel-7, p90_ms: 20, peak_mem: 100}\n  - {p50_ms: fast}\n")
    with pytest.raises(ConfigError) as e:
        load_budgets(path)
    assert e.value.exit_code == 2
    assert "budgets[0].peak_mem" in str(e.value.message) and "budgets[1].p50_ms" in str(e.value.message)


def test_budgets_only_file(tmp_path) -> None:
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {artifact: '*-int8', p50_ms: 12}\n")
    (rule,) = load_budgets(path)
    assert rule.artifact == "*-int8" and rule.limits == {"p50_ms": 12.0}


def test_duplicate_key_is_refused_not_last_one_wins(tmp_path) -> None:
    """``{p90_ms: 0.02, p90_ms: 500}``: plain YAML keeps 500 without a word and the gate would pass at 500 ms."""
    path = tmp_path / "devices.yaml"
    path.write_text(DEVICES_YAML + "  - {device: pixel-7, p90_ms: 0.02, p90_ms: 500}\n")
    with pytest.raises(ConfigError) as e:
        load_budgets(path)
    assert e.value.exit_code == 2 and "duplicate key 'p90_ms'" in e.value.message
    assert "line 7" in e.value.message
