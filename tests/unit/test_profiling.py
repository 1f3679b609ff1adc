"""mpk.profiling and the profile contract: every number and every mapping rule on inputs small enough to check by hand.

The integration tests (tests/integration/test_profiles.py) run the same code on real ONNX Runtime profiles and
real op maps; here each rule is pinned on its own, so a regression names the rule.
"""

from __future__ import annotations

import json

import pytest

from mpk.contract import problems
from mpk.contract.profile import finish, unavailable, validate_opmap, write_trace
from mpk.errors import UsageError
from mpk.profiling import (
    Event,
    OpIndex,
    aggregate,
    assign_units,
    attach_sources,
    attributed_share,
    chrome_trace,
    compare_units,
    is_trivial,
    ort_events,
    per_run_ms,
    rollup,
    unit_of,
)


def _ort_trace(runs: list[list[tuple[str, str, int]]]) -> list[dict]:
    """An ONNX Runtime profile as ORT writes it: a model_run per run, a _kernel_time event per node inside it."""
    out: list[dict] = [{"cat": "Session", "name": "model_loading_uri", "ts": 0, "dur": 50}]
    ts = 100
    for nodes in runs:
        start = ts
        for name, op, dur in nodes:
            out.append({"cat": "Node", "name": f"{name}_fence_before", "ts": ts, "dur": 0, "args": {"op_name": op}})
            out.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                        "args": {"op_name": op, "provider": "CPUExecutionProvider"}})  # fmt: skip
            ts += dur + 1
        out.append({"cat": "Session", "name": "model_run", "ts": start, "dur": ts - start})
        ts += 10
    return out


def test_ort_events_split_runs_and_aggregate_defines_the_numbers() -> None:
    trace = _ort_trace([[("c", "Conv", 3000), ("r", "Relu", 1000)], [("c", "Conv", 5000), ("r", "Relu", 1000)]])
    events, runs = ort_events(trace)
    assert runs == 2 and [e.run for e in events] == [0, 0, 1, 1]
    rows = aggregate([e for e in events if e.run >= 1], runs=1)  # the first run dropped as warm-up
    assert [(r["name"], r["calls"], r["total_ms"], r["share"]) for r in rows] == [("c", 1, 5.0, 5 / 6),
                                                                                 ("r", 1, 1.0, 1 / 6)]  # fmt: skip
    rows = aggregate(events, runs=2)
    assert rows[0]["mean_ms"] == 4.0 and rows[0]["delegated"] is False
    assert per_run_ms({"runs": 2, "ops": rows}) == 5.0


def test_a_provider_other_than_cpu_is_delegated() -> None:
    rows = aggregate([Event("a", "Conv", "XnnpackExecutionProvider", 1000), Event("b", "Add", None, 1000)], runs=1)
    assert [r["delegated"] for r in rows] == [True, None]


def test_trivial_ops_and_units() -> None:
    assert is_trivial("aten._native_batch_norm_legit_no_training") and is_trivial("hardtanh_.default")
    assert is_trivial("quantized_decomposed.dequantize_per_channel") and is_trivial("Reshape")
    assert not is_trivial("aten.convolution") and not is_trivial("Conv") and not is_trivial("QLinearConv")
    assert not is_trivial("aten.add.Tensor") and not is_trivial("aten.mean.dim")
    assert unit_of("_blocks.10._bn1", ["_blocks.1", "_blocks.10"]) == "_blocks.10"


def test_assign_units_folds_what_runtimes_fuse() -> None:
    units = ["stem", "bn0", "blocks.0", "blocks.1", "head", "pool", "fc", "act"]
    nodes = [("stem", "conv"), ("bn0", "batch_norm"), ("act", "hardtanh"),  # stem, its BN, a root-level ReLU6
             (None, "quantize_per_tensor"),  # no module: goes with its neighbour
             ("blocks.0.dw", "conv"), ("blocks.0", "add"),
             ("blocks.1.pw", "conv"), ("head", "conv"), ("act", "hardtanh"),
             ("pool", "mean"), ("", "view"), ("fc", "linear")]  # fmt: skip
    assert assign_units(nodes, units) == ["stem", "stem", "stem", "stem", "blocks.0", "blocks.0", "blocks.1", "head",
                                          "head", "pool", "pool", "fc"]  # fmt: skip
    # a graph that starts with trivial ops gives them to the first real unit, and a real root op is "(root)"
    assert assign_units([(None, "quantize"), ("x", "conv"), ("", "matmul")], ["x"]) == ["x", "x", "(root)"]


OPMAP = {
    "schema_version": "mpk.opmap/1", "backend": "onnx", "model": "m",
    "modules": {"": "M", "blk": "Block", "blk.conv": "Conv2d", "blk.bn": "BatchNorm2d", "fc": "Linear"},
    "units": ["blk", "fc"],
    "nodes": [
        {"name": "node_Conv_7", "op_type": "Conv", "module": "blk.conv", "unit": "blk", "inputs": ["x"],
         "outputs": ["getitem"]},
        {"name": "node_relu6", "op_type": "Clip", "module": "blk", "unit": "blk", "inputs": ["getitem"],
         "outputs": ["hardtanh"]},
        {"name": "node_add", "op_type": "Add", "module": "blk", "unit": "blk", "inputs": ["x", "hardtanh"],
         "outputs": ["add"]},
        {"name": "node_linear", "op_type": "Gemm", "module": "fc", "unit": "fc", "inputs": ["add"],
         "outputs": ["logits"]},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("runtime_name", "node", "via"),
    [
        ("node_linear", "node_linear", "exact"),
        ("node_Conv_7_token_12", "node_Conv_7", "renamed"),  # ORT's QDQ fusion: QLinearConv named after the Conv
        ("fused node_linear", "node_linear", "renamed"),  # ORT's Gemm+activation fusion
        ("hardtanh_nchwc", "node_Conv_7", "fused"),  # NCHWc Conv+Clip, named after the Clip's output
        ("add_nchwc", "node_add", "output"),
        ("ReorderOutput_token_3", None, "unmapped"),  # a layout conversion ORT inserted: nothing to map it to
    ],
)
def test_runtime_names_resolve_to_the_node_they_came_from(runtime_name: str, node: str | None, via: str) -> None:
    found, how = OpIndex(OPMAP).resolve(runtime_name)
    assert (found["name"] if found else None, how) == (node, via)


def _profile() -> dict:
    rows = aggregate([Event("hardtanh_nchwc", "Conv", "CPUExecutionProvider", 6000),
                      Event("ReorderOutput", "ReorderOutput", "CPUExecutionProvider", 1000),
                      Event("node_linear", "Gemm", "CPUExecutionProvider", 3000)], runs=1)  # fmt: skip
    return {"status": "measured", "method": "test", "runs": 1, "ops": rows}


def test_attach_sources_rollups_and_attributed_share() -> None:
    p = attach_sources(_profile(), OPMAP)
    assert [(o["module"], o["unit"]) for o in p["ops"]] == [("blk.conv", "blk"), (None, None), ("fc", "fc")]
    assert p["attributed_share"] == attributed_share(p) == 0.9
    assert [(r["module"], r["ms"]) for r in rollup(p, by="unit")] == [("blk", 6.0), ("fc", 3.0), (None, 1.0)]
    assert p["source_map"] == "mpk.opmap/1"
    bare = attach_sources(_profile(), None)
    assert bare["attributed_share"] == 0.0 and "no op map" in bare["notes"][0]


def test_finish_compares_with_the_unprofiled_loop_without_touching_it() -> None:
    p = finish({**_profile(), "profiled_ms": 12.0}, p50_ms=8.0, mean_ms=9.0)
    assert p["per_run_ms"] == 10.0 and p["vs_p50"] == pytest.approx(0.25) and p["overhead"] == pytest.approx(0.5)
    assert p["unprofiled_p50_ms"] == 8.0 and p["unprofiled_mean_ms"] == 9.0
    assert (
        problems({"id": "a", "backend": "onnx", "scheme": "fp32", "status": "ok", "profile": p}, "runner_result") != []
    )  # an artifact result, not a whole result: the check must see that
    doc = _result_with(p)
    assert problems(doc, "runner_result") == []


def _result_with(profile: dict | None) -> dict:
    art = {"id": "onnx-fp32", "backend": "onnx", "scheme": "fp32", "status": "ok"}
    if profile is not None:
        art["profile"] = profile
    return {"schema_version": "mpk.runner-result/1", "run_id": "r", "device_id": "host", "emulated": False,
            "runner": {"name": "host", "version": "0"}, "device": {"model": "m", "abi": "x86_64", "os": "linux",
                                                                   "cores": 2},
            "settings": {"threads": 1, "warmup_iterations": 0, "min_iterations": 1, "min_seconds": 0.0,
                         "profile": True},
            "started_utc": "t", "finished_utc": "t", "artifacts": [art]}  # fmt: skip


def test_schema_keeps_old_results_valid_and_refuses_a_bad_profile() -> None:
    assert problems(_result_with(None), "runner_result") == []
    old = _result_with(None)
    del old["settings"]["profile"]
    assert problems(old, "runner_result") == []
    assert problems(_result_with(unavailable("x", "no tracer")), "runner_result") == []
    bad = finish(attach_sources(_profile(), OPMAP), p50_ms=1.0, mean_ms=1.0)
    bad["ops"][0]["share"] = 1.5
    bad["status"] = "guessed"
    found = problems(_result_with(bad), "runner_result")
    assert any("share" in f for f in found) and any("status" in f for f in found), found


def test_chrome_trace_is_one_complete_event_per_op_tiling_one_inference(tmp_path) -> None:
    p = attach_sources({**_profile(), "runs": 2}, OPMAP)
    path = write_trace(tmp_path / "t.json", p, process="host / onnx-fp32")
    doc = json.loads(path.read_text())
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in xs] == [o["name"] for o in p["ops"]]
    assert [e["dur"] for e in xs] == [3000.0, 500.0, 1500.0]  # microseconds per inference
    assert [e["ts"] for e in xs] == [0.0, 3000.0, 3500.0]
    assert xs[0]["args"]["module"] == "blk.conv" and doc == chrome_trace(p, process="host / onnx-fp32")


def test_compare_units_ranks_by_the_slowest_runtime() -> None:
    a = {"status": "measured", "runs": 1, "ops": [{"total_ms": 1.0, "unit": "x"}, {"total_ms": 5.0, "unit": "y"}]}
    b = {"status": "estimated", "runs": 1, "ops": [{"total_ms": 9.0, "unit": "x"}]}
    units, rows = compare_units({"onnx": a, "et": b}, top=5)
    assert units == ["x", "y"]
    assert rows[0]["cells"]["et"] == {"ms": 9.0, "share": 1.0, "status": "estimated"} and "et" not in rows[1]["cells"]


def test_op_map_schema_is_checked() -> None:
    assert validate_opmap(OPMAP) is OPMAP
    with pytest.raises(UsageError, match="nodes"):
        validate_opmap({**OPMAP, "nodes": [{"name": "n"}]})


def test_devices_yaml_profile_setting_and_the_flag_reach_the_spec() -> None:
    from pathlib import Path

    from mpk.errors import ConfigError
    from runners.bench import BenchConfig
    from runners.config import parse_devices
    from runners.matrix import build_spec

    cfg = parse_devices({"version": 1, "devices": [{"id": "host", "kind": "host", "profile": True},
                                                   {"id": "v", "kind": "emulator"}]})  # fmt: skip
    on, off = (d.settings(cfg.defaults) for d in cfg.devices)
    assert on.to_spec()["profile"] is True and "profile" not in off.to_spec()
    flagged = off.override(**BenchConfig(manifest=Path("m"), out=Path("o"), profile=True).overrides())
    assert flagged.to_spec()["profile"] is True
    assert "profile" not in off.override(**BenchConfig(manifest=Path("m"), out=Path("o")).overrides()).to_spec()
    with pytest.raises(ConfigError, match=r"devices\[0\]\.profile: expected true or false, got 'yes'"):
        parse_devices({"version": 1, "devices": [{"id": "host", "kind": "host", "profile": "yes"}]})
    art = {"id": "onnx-fp32", "backend": "onnx", "scheme": "fp32", "path": "a/m.onnx", "sha256": "0" * 64,
           "profiling": {"op_map": {"path": "a/m.opmap.json", "sha256": "1" * 64, "size_bytes": 3}}}  # fmt: skip
    spec = build_spec("r", "host", flagged, art, None)
    assert spec["artifacts"][0]["profiling"] == {"op_map": "a/m.opmap.json"}
    assert problems(spec, "runner_spec") == []
    assert "profiling" not in build_spec("r", "host", off, art, None)["artifacts"][0]  # nothing extra is pushed
