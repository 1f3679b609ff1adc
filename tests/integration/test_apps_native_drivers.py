"""The native drivers end to end on the host: real subprocesses, real result assembly, real schema check.

ExecuTorch's ``executor_runner`` and ORT's ``onnxruntime_perf_test`` are C++
binaries that no pip wheel ships, so they cannot exist here. Each is stood in
for by a tiny shell script that prints the real tools' exact line formats (see
tests/unit/test_apps_native.py for their sources) and, for the ORT tool, writes
the per-run CSV result file. Everything else is real: binary resolution via the
env var, argv, the subprocess, parsing, the second calibrated run, LatencyStats
and runner_result validation.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from mpk.contract import problems as schema_problems
from runners.devices import DeviceSpec
from runners.drivers import get_driver

FAKE_ET = r"""#!/bin/sh
n=1
for a in "$@"; do case "$a" in --num_executions=*) n=${a#--num_executions=};; esac; done
echo "I 00:00:00.001000 executorch:executor_runner.cpp:470] Model loaded in 2.500000 ms." >&2
i=1
while [ $i -le $n ]; do
  echo "I 00:00:00.00$i executorch:executor_runner.cpp:611] Iteration $i of $n: $((i % 3 + 1)).250000 ms" >&2
  i=$((i+1))
done
echo "I 00:00:00.009000 executorch:executor_runner.cpp:622] Model executed successfully $n time(s) in 9.000000 ms." >&2
"""

FAKE_ORT = r"""#!/bin/sh
n=1; last=""; prev=""
while [ $# -gt 0 ]; do
  case "$1" in -r) n=$2; shift;; esac
  prev=$last; last=$1; shift
done
i=0
while [ $i -lt $n ]; do echo "m,0.00$((i % 4 + 1))5,4096000,90,$i" >> "$last"; i=$((i+1)); done
printf 'Session creation time cost: 0.012 s\nFirst inference time cost: 2 ms\nTotal inference requests: %s\n' "$n"
printf 'Average inference time cost: 2.5 ms\nPeak working set size: 4096000 bytes\nP50 Latency: 0.0025 s\n'
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _spec(tmp: Path, backend: str, ext: str) -> dict:
    (tmp / f"m.{ext}").write_bytes(b"model")
    sha = hashlib.sha256(b"model").hexdigest()
    return {
        "schema_version": "mpk.runner-spec/1", "run_id": "r1", "device_id": "host",
        "settings": {"threads": 1, "cpu_affinity": None, "warmup_iterations": 2, "min_iterations": 5,
                     "min_seconds": 0.03, "max_seconds": 10.0},
        "artifacts": [{"id": f"{backend}-fp32", "backend": backend, "scheme": "fp32", "path": f"m.{ext}",
                       "sha256": sha},
                      {"id": "coreml-fp16", "backend": "coreml", "scheme": "fp16", "path": f"m.{ext}", "sha256": sha}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("runner", "env", "script", "backend", "ext"),
    [("executor_runner", "MPK_EXECUTOR_RUNNER", FAKE_ET, "executorch", "pte"),
     ("onnxruntime_perf_test", "MPK_ONNXRUNTIME_PERF_TEST", FAKE_ORT, "onnx", "onnx")],
)  # fmt: skip
def test_native_driver_on_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner, env, script, backend, ext):
    monkeypatch.setenv(env, str(_script(tmp_path / runner, script)))
    device = DeviceSpec(id="host", kind="host", runner=runner)
    driver = get_driver(runner)
    assert driver.probe(device).reachable
    spec = _spec(tmp_path, backend, ext)
    result = driver.run(tmp_path, spec, device, timeout_s=60)
    assert schema_problems(result, "runner_result") == []
    ok, other = result["artifacts"]
    assert ok["status"] == "ok" and ok["stats"] is not None and ok["warmup_iterations"] == 2
    # min_seconds 0.03 at ~2-3 ms/iteration needs more than min_iterations=5: the calibrated second run
    assert ok["iterations"] >= 10 and len(ok["samples_ms"]) == ok["iterations"]
    assert ok["load_ms"] > 0 and ok["first_inference_ms"] > 0
    assert other["status"] == "error" and other["error"]["kind"] == "unsupported"
    assert "timing" not in result["runner"]["runtimes"]
    json.dumps(result)


def test_missing_binary_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPK_EXECUTOR_RUNNER", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    probe = get_driver("executor_runner").probe(DeviceSpec(id="host", kind="host", runner="executor_runner"))
    assert not probe.reachable and "MPK_EXECUTOR_RUNNER" in probe.detail


@pytest.mark.parametrize(
    ("runner", "env", "backend", "ext"),
    [("executor_runner", "MPK_EXECUTOR_RUNNER", "executorch", "pte"),
     ("onnxruntime_perf_test", "MPK_ONNXRUNTIME_PERF_TEST", "onnx", "onnx")],
)  # fmt: skip
def test_a_tool_that_fails_to_load_is_an_error_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner, env,
                                                     backend, ext):  # fmt: skip
    broken = "#!/bin/sh\necho 'cannot open model: bad magic' >&2\nexit 3\n"
    monkeypatch.setenv(env, str(_script(tmp_path / runner, broken)))
    device = DeviceSpec(id="host", kind="host", runner=runner)
    result = get_driver(runner).run(tmp_path, _spec(tmp_path, backend, ext), device, timeout_s=60)
    assert schema_problems(result, "runner_result") == []
    bad = result["artifacts"][0]
    assert bad["status"] == "error" and bad["error"]["kind"] == "load", bad
    assert f"{runner} exited 3" in bad["error"]["message"] and "bad magic" in bad["error"]["message"]


FAKE_ET_1_0 = r"""#!/bin/sh
# as ExecuTorch 1.0's runner: gflags rejects --print_output, and only the total is logged
n=1
for a in "$@"; do
  case "$a" in
    --print_output*) echo "ERROR: unknown command line flag 'print_output'" >&2; exit 1;;
    --num_executions=*) n=${a#--num_executions=};;
  esac
done
msg="Model executed successfully $n time(s) in $((n * 3)).000000 ms."
echo "I 00:00:00.009000 executorch:executor_runner.cpp:342] $msg" >&2
"""


def test_executor_runner_1_0_without_print_output_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1.0 runner rejects --print_output; the driver asks again without it and reports aggregate-only timing."""
    monkeypatch.setenv("MPK_EXECUTOR_RUNNER", str(_script(tmp_path / "executor_runner", FAKE_ET_1_0)))
    device = DeviceSpec(id="host", kind="host", runner="executor_runner")
    result = get_driver("executor_runner").run(tmp_path, _spec(tmp_path, "executorch", "pte"), device, timeout_s=60)
    assert schema_problems(result, "runner_result") == []
    ok = result["artifacts"][0]
    assert ok["status"] == "ok" and ok["stats"] is None and ok["samples_ms"] == [] and ok["iterations"] >= 5
    assert result["runner"]["runtimes"]["timing"].startswith("aggregate-only")
