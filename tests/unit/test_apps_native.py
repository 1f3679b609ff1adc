"""Native runner output parsing, command construction (native + iOS devicectl) and `mpk apps build` messages.

Fixtures are written in the exact formats of the real print statements:
executor_runner.cpp's ET_LOG lines behind the POSIX PAL prefix
(``%c %02u:%02u:%02u.%06lu executorch:%s:%zu] %s``), and onnxruntime_perf_test's
performance_runner.cc stdout summary plus its DumpToFile CSV rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mpk.errors import EXIT_INFRA, RuntimeMissing
from runners.apps.android_build import build_android, check_android_toolchain
from runners.drivers import native_executorch as ne
from runners.drivers import native_ort as no
from runners.drivers.ios import copy_from_cmd, copy_to_cmd, install_cmd, launch_cmd, run_plan

ET_LOG = """\
I 00:00:00.000102 executorch:executor_runner.cpp:238] Resetting threadpool with num threads = 4
I 00:00:00.001380 executorch:executor_runner.cpp:329] Model file m.pte is loaded.
I 00:00:00.001391 executorch:executor_runner.cpp:339] Using method forward
I 00:00:00.014300 executorch:executor_runner.cpp:470] Model loaded in 12.915000 ms.
I 00:00:00.020001 executorch:executor_runner.cpp:611] Iteration 1 of 5: 9.500000 ms
I 00:00:00.025001 executorch:executor_runner.cpp:611] Iteration 2 of 5: 5.000000 ms
I 00:00:00.030001 executorch:executor_runner.cpp:611] Iteration 3 of 5: 4.000000 ms
I 00:00:00.034001 executorch:executor_runner.cpp:611] Iteration 4 of 5: 4.250000 ms
I 00:00:00.038001 executorch:executor_runner.cpp:611] Iteration 5 of 5: 4.750000 ms
I 00:00:00.038101 executorch:executor_runner.cpp:622] Model executed successfully 5 time(s) in 27.500000 ms.
I 00:00:00.038201 executorch:executor_runner.cpp:626] 1 outputs:
"""

PERF_STDOUT = """\
Session creation time cost: 0.0213 s
First inference time cost: 3 ms
Total inference time cost: 0.00612 s
Total inference requests: 4
Average inference time cost: 1.53 ms
Total inference run time: 0.00624 s
Number of inferences per second: 641.0
Avg CPU usage: 97 %
Peak working set size: 41541632 bytes
Min Latency: 0.00141 s
Max Latency: 0.00171 s
P50 Latency: 0.00152 s
P90 Latency: 0.00171 s
P95 Latency: 0.00171 s
P99 Latency: 0.00171 s
P999 Latency: 0.00171 s
"""
PERF_FILE = "m,0.00171,41541632,97,0\nm,0.00141,41541632,97,1\nm,0.00148,41541632,97,2\nm,0.00152,41541632,97,3\n\n"
PERF_FILE += "Min Latency: 0.00141 s\nP50 Latency: 0.00152 s\n"


def test_executor_runner_parse_and_split() -> None:
    out = ne.parse_executor_runner(ET_LOG)
    assert out.ok and out.executions == 5 and out.total_ms == 27.5 and out.load_ms == 12.915
    assert out.iterations_ms == [9.5, 5.0, 4.0, 4.25, 4.75]
    t = ne.timings_from_executor_runner(out, warmup=1)
    assert t.first_inference_ms == 9.5 and t.samples_ms == [4.0, 4.25, 4.75]


def test_executor_runner_aggregate_only_is_honest() -> None:
    """An older runner prints only the total: no samples and no invented stats."""
    old = "\n".join(ln for ln in ET_LOG.splitlines() if "Iteration" not in ln)
    t = ne.timings_from_executor_runner(ne.parse_executor_runner(old), warmup=1)
    res = ne.artifact_result({"id": "a", "backend": "executorch", "scheme": "fp32"}, t, None)
    assert res["samples_ms"] == [] and res["stats"] is None and res["iterations"] == 5


def test_executor_runner_argv() -> None:
    argv = ne.executor_runner_argv("/bin/er", "m.pte", executions=11, threads=4)
    assert argv == ["/bin/er", "--model_path=m.pte", "--num_executions=11", "--print_output=none", "--cpu_threads=4"]
    assert ne.cpu_mask((4, 5, 6, 7)) == "f0"


def test_plan_iterations_covers_min_seconds_and_caps_at_max() -> None:
    s = {"min_iterations": 10, "min_seconds": 2.0, "max_seconds": 3.0}
    assert ne.plan_iterations(s, 100.0) == 20  # 2 s at 100 ms
    assert ne.plan_iterations(s, 1000.0) == 3  # max_seconds cuts a slow model, as the host runner does
    assert ne.plan_iterations(s, None) == 10


def test_perf_test_stdout_and_result_file() -> None:
    s = no.parse_perf_test_stdout(PERF_STDOUT)
    assert s.ok and s.requests == 4 and s.average_ms == 1.53 and s.first_inference_ms == 3
    assert s.session_creation_s == 0.0213 and s.peak_working_set_bytes == 41541632
    assert s.percentiles_s["p90"] == 0.00171
    rows = no.parse_perf_test_result_file(PERF_FILE)
    assert rows == pytest.approx([1.71, 1.41, 1.48, 1.52])
    t = no.timings_from_perf_test(s, rows, warmup=1)
    assert t.samples_ms == pytest.approx([1.41, 1.48, 1.52]) and t.load_ms == pytest.approx(21.3)


def test_perf_test_percentiles_only_when_no_rows() -> None:
    t = no.timings_from_perf_test(no.parse_perf_test_stdout(PERF_STDOUT), [], warmup=1)
    res = ne.artifact_result({"id": "o", "backend": "onnx", "scheme": "fp32"}, t, None)
    assert res["stats"] is None and res["samples_ms"] == [] and res["iterations"] == 3


def test_perf_test_argv() -> None:
    argv = no.perf_test_argv("pt", "m.onnx", "r.csv", repetitions=30, threads=2)
    assert argv == ["pt", "-m", "times", "-r", "30", "-e", "cpu", "-I", "-s", "-x", "2", "-y", "1", "m.onnx", "r.csv"]


def test_devicectl_commands(tmp_path: Path) -> None:
    """Pure command construction; running them needs macOS + a paired iPhone (marked macos elsewhere)."""
    assert install_cmd("U1", Path("A.app")) == ["xcrun", "devicectl", "device", "install", "app", "--device", "U1",
                                                "A.app"]  # fmt: skip
    cp = copy_to_cmd("U1", Path("m.pte"), "Documents/mpk/r1/m.pte")
    assert cp[:7] == ["xcrun", "devicectl", "device", "copy", "to", "--device", "U1"]
    assert cp[7:11] == ["--domain-type", "appDataContainer", "--domain-identifier", "org.mpk.bench"]
    assert cp[-4:] == ["--source", "m.pte", "--destination", "Documents/mpk/r1/m.pte"]
    assert copy_from_cmd("U1", "Documents/mpk/r1/DONE", Path("D"))[3:5] == ["copy", "from"]
    assert launch_cmd("U1", "mpk/r1/spec.json")[-4:] == ["--terminate-existing", "org.mpk.bench", "--spec",
                                                         "mpk/r1/spec.json"]  # fmt: skip
    spec = {"run_id": "r1", "artifacts": [{"path": "a/m.mlpackage"}], "reference": {"inputs": [{"path": "i.bin"}],
            "outputs": [{"path": "o.bin"}]}}  # fmt: skip
    plan = run_plan("U1", tmp_path, spec, Path("A.app"))
    assert plan[0][3:5] == ["install", "app"] and plan[-1][3:5] == ["process", "launch"]
    assert [c[-1] for c in plan[1:-1]] == [f"Documents/mpk/r1/{f}" for f in
                                           ("a/m.mlpackage", "i.bin", "o.bin", "spec.json")]  # fmt: skip


def test_android_build_lists_every_missing_prerequisite(tmp_path: Path) -> None:
    app = tmp_path / "android_app"
    (app / "gradle" / "wrapper").mkdir(parents=True)
    tc = check_android_toolchain(app, env={"PATH": str(tmp_path / "empty")})
    text = "\n".join(tc.problems)
    assert "ANDROID_HOME" in text and "sdkmanager" in text
    assert "no JDK" in text and "openjdk-17" in text
    assert "gradle-wrapper.jar is missing" in text and "gradle wrapper" in text
    with pytest.raises(RuntimeMissing) as e:
        build_android(app_dir=app, env={"PATH": str(tmp_path / "empty")})
    assert e.value.exit_code == EXIT_INFRA


def test_android_build_sdk_dir_must_exist(tmp_path: Path) -> None:
    tc = check_android_toolchain(tmp_path, env={"ANDROID_HOME": str(tmp_path / "nope"), "PATH": ""})
    assert any("is not a directory" in p for p in tc.problems)


def test_cli_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from mpk.cli import main

    monkeypatch.delenv("ANDROID_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    r = CliRunner().invoke(main, ["apps", "build", "android"])
    assert r.exit_code == EXIT_INFRA and "Android SDK" in r.output
    monkeypatch.setenv("PATH", "/nonexistent")  # no Swift toolchain
    r = CliRunner().invoke(main, ["apps", "build", "ios"])
    assert r.exit_code == EXIT_INFRA and "needs a Swift toolchain" in r.output
    r = CliRunner().invoke(main, ["apps", "build", "andriod"])
    assert r.exit_code == 2
