"""devices.yaml loading: every problem reported at once, each with its path; names checked via registries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mpk.errors import EXIT_USAGE, ConfigError, UsageError
from runners.config import load_devices, parse_devices
from runners.devices import RunSettings


def test_shipped_devices_yaml_loads(repo_root: Path) -> None:
    cfg = load_devices(repo_root / "devices.yaml")
    by_id = {d.id: d for d in cfg.devices}
    assert by_id["host"].kind == "host" and by_id["host"].runner == "host"
    phone = by_id["pixel-7"]
    assert phone.kind == "android" and phone.serial and phone.transport == "adb_server"
    assert phone.runner == "android_app" and phone.settings(cfg.defaults).threads == 4
    virtual = by_id["virtual-android"]
    assert virtual.is_virtual and virtual.shares_host_cpu
    # the shipped budgets parse into rules: real-device ones, and one that gates only emulated cells
    assert len(cfg.budgets) == 4
    assert any(getattr(r, "emulated", None) is True for r in cfg.budgets)


def test_every_problem_is_reported_together_with_its_path(tmp_path: Path) -> None:
    raw = {
        "version": 1,
        "defaults": {"min_itertions": 5, "min_seconds": "long"},
        "devices": [
            {"id": "host", "kind": "host"},
            {"id": "p", "kind": "androd", "serial": "X"},
            {"id": "q", "kind": "android", "serial": "Y", "threads": "four", "runner": "android_ap"},
            {"id": "host", "kind": "host"},
            {"id": "r", "kind": "android"},
        ],
        "budget": [],
    }
    f = tmp_path / "devices.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as ei:
        load_devices(f)
    e = ei.value
    text = "\n".join(e.problems)
    assert e.exit_code == EXIT_USAGE
    assert "defaults.min_itertions: unknown key; did you mean 'min_iterations'?" in text
    assert "defaults.min_seconds: expected a number >= 0, got 'long'" in text
    assert "devices[1].kind: unknown device kind 'androd'; did you mean 'android'?" in text
    assert "devices[2].threads: expected an integer >= 1, got 'four'" in text
    assert "devices[2].runner: unknown runner 'android_ap'; did you mean 'android_app'?" in text
    assert "devices[3].id: duplicate id 'host' (first at devices[0])" in text
    assert "devices[4]: an android device needs 'serial' or 'address'" in text
    assert "budget: unknown key; did you mean 'budgets'?" in text
    assert len(e.problems) == 8
    assert e.format_message().startswith("8 problem(s) in devices.yaml:")


def test_unknown_transport_and_bad_affinity_and_address() -> None:
    raw = {"version": 1, "devices": [
        {"id": "a", "kind": "android", "address": "nocolon", "transport": "adb_shel", "cpu_affinity": [-1]},
    ]}  # fmt: skip
    with pytest.raises(ConfigError) as ei:
        parse_devices(raw)
    text = "\n".join(ei.value.problems)
    assert "devices[0].transport: unknown transport 'adb_shel'; did you mean 'adb_shell'?" in text
    assert "devices[0].cpu_affinity: expected a non-empty list of CPU numbers >= 0" in text
    assert "devices[0].address: expected 'host:port', got 'nocolon'" in text


def test_budget_problems_are_merged_into_the_same_error() -> None:
    raw = {"version": 2, "devices": [{"id": "h", "kind": "host"}], "budgets": [{"device": "h", "p90ms": 3}]}
    with pytest.raises(ConfigError) as ei:
        parse_devices(raw)
    text = "\n".join(ei.value.problems)
    assert "version: expected 1, got 2" in text
    assert "budgets[0].p90ms" in text


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "devices.yaml"
    f.write_text("version: 1\ndevices: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_devices(f)
    with pytest.raises(UsageError, match="not found"):
        load_devices(tmp_path / "nope.yaml")
    f.write_bytes(b"version: 1\ndevices: [\xff\xfe]\n")
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 0xff at offset 21\)"):
        load_devices(f)
    f.write_text("version: 1\nversion: 1\ndevices: [{id: h, kind: host}]\n")
    with pytest.raises(ConfigError, match="line 2: duplicate key 'version' \\(first at line 1\\)"):
        load_devices(f)


def test_settings_merge_defaults_device_and_flags() -> None:
    cfg = parse_devices({"version": 1, "defaults": {"threads": 2, "max_seconds": None, "min_iterations": 7},
                         "devices": [{"id": "h", "kind": "host", "threads": 3, "cpu_affinity": [0]}]})  # fmt: skip
    s = cfg.devices[0].settings(cfg.defaults)
    assert (s.threads, s.cpu_affinity, s.min_iterations, s.max_seconds) == (3, (0,), 7, None)
    s2 = s.override(threads=1, min_iterations=None)
    assert (s2.threads, s2.min_iterations) == (1, 7)
    assert RunSettings().to_spec()["threads"] == 1
    with pytest.raises(UsageError, match="did you mean 'h'"):
        cfg.get("hh")
