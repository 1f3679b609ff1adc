"""The native drivers read every output form the real tools print, checked against the tools' own source text.

tests/fixtures/native_tools/ quotes, with upstream path and tag/commit in each file's header:
ExecuTorch's ``executor_runner.cpp`` ET_LOG format strings (v1.4.1, and v1.0.0 which logs only the total) with
the POSIX PAL prefix, and ONNX Runtime's ``performance_runner.cc`` stream statements (1.x and 0.x) plus the
``README.md`` sample output of current releases ("Average inference time cost total:"). The tests render those
format strings with known numbers, exactly as printf / iostream would, and parse the text with mpk's parsers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from runners.drivers import native_executorch as ne
from runners.drivers import native_ort as no

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "native_tools"


def _body(name: str) -> str:
    return "\n".join(ln for ln in (FIXTURES / name).read_text().splitlines() if not ln.startswith("#"))


def _c_format(name: str) -> dict[str, str]:
    """``@key "literal" PRIu32 "literal"`` lines -> {key: one printf format}, macros expanded like the C headers."""
    out = {}
    for line in _body(name).splitlines():
        m = re.match(r"@(\w+)\s+(.*)$", line)
        if m:
            expanded = re.sub(r"\bPRIu32\b", '"u"', m.group(2))
            fmt = "".join(ast.literal_eval(lit) for lit in re.findall(r'"(?:[^"\\]|\\.)*"', expanded))
            out[m.group(1)] = re.sub(r"%(\d*)(?:z|l)u", r"%\1u", fmt)  # Python's % has no z/l length modifiers
    return out


def _cpp_stream(name: str, values: list[object]) -> str:
    """Render quoted ``std::cout << "text" << expr ...`` statements: literals verbatim, expressions -> next value."""
    code = re.sub(r"//[^\n]*", "", _body(name))
    vals = iter(values)
    out = []
    for stmt in code.split(";"):
        parts = [p.strip() for p in stmt.split("<<")][1:]
        for p in parts:
            if p.startswith('"'):
                out.append(ast.literal_eval(p))
            elif p == "std::endl":
                out.append("\n")
            elif p:
                out.append(str(next(vals)))
    return "".join(out)


def _et_log(fmt: dict[str, str], line: str, n: int) -> str:
    return fmt["prefix"] % ("I", 0, 0, 1, n, "executor_runner.cpp", 600 + n, line)


def test_executor_runner_v1_4_1_lines() -> None:
    f = _c_format("executor_runner-v1.4.1.txt")
    times = [9.5, 5.0, 4.0, 4.25, 4.75]
    log = _et_log(f, f["load"] % 12.915, 0)
    for i, t in enumerate(times, 1):
        log += _et_log(f, f["iteration"] % (i, len(times), t), i)
    log += _et_log(f, f["total"] % (len(times), sum(times)), 9)
    assert "executorch:executor_runner.cpp:" in log and "Iteration 3 of 5: 4.000000 ms" in log
    out = ne.parse_executor_runner(log)
    assert out.ok and out.load_ms == pytest.approx(12.915) and out.iterations_ms == pytest.approx(times)
    assert out.executions == 5 and out.total_ms == pytest.approx(27.5)
    t = ne.timings_from_executor_runner(out, warmup=1)
    assert t.first_inference_ms == pytest.approx(9.5) and t.samples_ms == pytest.approx([4.0, 4.25, 4.75])


def test_executor_runner_v1_0_0_total_only() -> None:
    f = _c_format("executor_runner-v1.0.0.txt")
    out = ne.parse_executor_runner(_et_log(f, f["total"] % (11, 55.0), 1))
    assert out.ok and out.iterations_ms == [] and out.executions == 11 and out.total_ms == pytest.approx(55.0)
    t = ne.timings_from_executor_runner(out, warmup=2)
    assert t.samples_ms == [] and t.aggregate_iterations == 11 and t.aggregate_mean_ms == pytest.approx(5.0)


def test_perf_test_1x_summary_dump_and_statistics() -> None:
    values = [0.0213, 3, 0.00612, 4, 1.53, 0.00624, 641.0, 97, 41541632,  # Run()
              97, 41541632, 4,  # DumpToFile without a result file
              0.00141, 0.00171, 0.00152, 0.00171, 0.00171, 0.00171, 0.00171]  # fmt: skip
    text = _cpp_stream("perf_test-runner-77e6dc9.txt", values)
    assert "Average inference time cost: 1.53 ms\n" in text and "\nRuns:4\n" in text
    s = no.parse_perf_test_stdout(text)
    assert s.ok and s.session_creation_s == 0.0213 and s.first_inference_ms == 3 and s.total_inference_s == 0.00612
    assert s.requests == 4 and s.average_ms == 1.53 and s.peak_working_set_bytes == 41541632
    assert s.percentiles_s == {"min": 0.00141, "max": 0.00171, "p50": 0.00152, "p90": 0.00171, "p95": 0.00171,
                               "p99": 0.00171, "p999": 0.00171}  # fmt: skip


def test_perf_test_dump_alone_gives_the_run_count() -> None:
    """A run whose summary scrolled away still has DumpToFile's ``Runs:`` line."""
    text = _cpp_stream("perf_test-runner-77e6dc9.txt", [0] * 9 + [90, 4096000, 12] + [0.002] * 7)
    dump = text[text.index("Avg CPU usage:9") :]
    s = no.parse_perf_test_stdout(dump)
    assert s.requests == 12 and s.peak_working_set_bytes == 4096000 and s.average_ms is None and s.ok


def test_perf_test_0x_summary() -> None:
    text = _cpp_stream("perf_test-runner-034db1c.txt", [0.152, 100, 1.52])
    assert text == "Total time cost:0.152\nTotal iterations:100\nAverage time cost:1.52 ms\n"
    s = no.parse_perf_test_stdout(text)
    assert s.ok and s.total_inference_s == 0.152 and s.requests == 100 and s.average_ms == 1.52


def test_perf_test_0x_readme_sample_statistics() -> None:
    s = no.parse_perf_test_stdout(_body("perf_test-readme-legacy-011738c.txt"))
    assert s.requests == 1000 and s.average_ms == 58.8053 and s.total_inference_s == 58.8053
    assert s.percentiles_s["p50"] == 0.0587108 and s.percentiles_s["p999"] == 0.0623472


def test_perf_test_current_total_form() -> None:
    s = no.parse_perf_test_stdout(_body("perf_test-readme-current.txt"))
    assert s.ok and s.average_ms == 5.88053 and s.requests == 1000 and s.first_inference_ms == 12
    assert s.session_creation_s == 0.512 and s.peak_working_set_bytes == 123456789
    assert s.percentiles_s["p90"] == 0.0599845
    t = no.timings_from_perf_test(s, [], warmup=0)
    assert t.aggregate_mean_ms == 5.88053 and t.aggregate_iterations == 1000 and t.load_ms == pytest.approx(512.0)


def test_unparseable_output_is_not_ok() -> None:
    assert not no.parse_perf_test_stdout("usage: onnxruntime_perf_test [options...] model_path\n").ok
    assert not ne.parse_executor_runner("E 00:00:00.000100 executorch:executor_runner.cpp:1] bad magic").ok
