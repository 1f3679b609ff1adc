"""Drive ONNX Runtime's ``onnxruntime_perf_test`` binary (onnxruntime/test/perftest).

Command (flags from its usage text): ``-m times -r N`` fixed repetitions, ``-e cpu``,
``-x T`` intra-op threads and ``-y 1`` inter-op (the host runner's session options),
``-I`` generate input bindings (no test_data_set directory needed), ``-s`` print
statistics, then ``model.onnx result_file``.

What it prints has changed over ORT's history; :func:`parse_perf_test_stdout` reads
every form below, each checked in tests/unit/test_apps_native.py against the tool's own
source text quoted in tests/fixtures/native_tools/ (upstream path + commit there)::

    # performance_runner.cc, ORT 1.x (PerformanceRunner::Run)
    Session creation time cost: 0.0213 s
    First inference time cost: 3 ms
    Total inference time cost: 0.152 s
    Total inference requests: 100
    Average inference time cost: 1.52 ms
    Total inference run time: 0.153 s
    Number of inferences per second: 653.6
    Avg CPU usage: 97 %
    Peak working set size: 41541632 bytes
    # current releases (onnxruntime/test/perftest/README.md, "Sample output")
    Average inference time cost total: 1.52 ms
    # PerformanceResult::DumpToFile without a result file, and its -s statistics
    Avg CPU usage:97
    Peak working set size:41541632
    Runs:100
    Min Latency: 0.00141 s
    P50 Latency: 0.00149 s
    # the first releases (0.x): Run() and the README's sample output
    Total time cost:0.152
    Total iterations:100
    Average time cost:1.52 ms
    P50 Latency is 0.00149sec

Per-iteration samples: the stdout has only percentiles (nearest-rank, not mpk's
linear interpolation), but ``PerformanceResult::DumpToFile`` writes one CSV row
per run to the result file: ``model_name,seconds,peak_working_set,cpu_usage,run_index``.
mpk reads those rows, so stats are real :class:`~runners.stats.LatencyStats`.
If the result file cannot be read back, the result is honest about it:
``samples_ms`` empty, ``stats: null`` and ``runner.runtimes.timing`` says
"percentiles-only"; :class:`PerfTestSummary` keeps the printed numbers for
Python callers.

Warm-up: the tool always runs exactly one untimed inference (reported as
``First inference time cost``, whole milliseconds); mpk runs
``warmup_iterations + N`` timed repetitions and drops the first
``warmup_iterations`` rows, so warm-up means what it means on the host runner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from runners.drivers.native_executorch import NativeTimings, NativeToolDriver, Target, failure

_NUM = r"([-+0-9.eE]+)"
_PERCENTILE_LABELS = (("min", "Min"), ("max", "Max"), ("p50", "P50"), ("p90", "P90"), ("p95", "P95"), ("p99", "P99"),
                      ("p999", "P999"))  # fmt: skip
#: every form of each summary line the tool has printed (see the module docstring); the first match wins
_FIELDS: dict[str, tuple[str, ...]] = {
    "session_creation_s": (rf"Session creation time cost:\s*{_NUM} s",),
    "first_inference_ms": (rf"First inference time cost:\s*{_NUM} ms",),
    "total_inference_s": (rf"Total inference time cost:\s*{_NUM} s", rf"^\s*Total time cost:\s*{_NUM}\s*$"),
    "requests": (rf"Total inference requests:\s*{_NUM}", rf"Total iterations:\s*{_NUM}", rf"^\s*Runs:\s*{_NUM}"),
    "average_ms": (rf"Average inference time cost(?: total)?:\s*{_NUM} ms", rf"Average time cost:\s*{_NUM} ms"),
    "peak_working_set_bytes": (rf"Peak working set size:\s*{_NUM}",),
    **{
        f"{key}_s": (rf"{label} Latency:\s*{_NUM} s", rf"{label} Latency is {_NUM}\s*sec?")
        for key, label in _PERCENTILE_LABELS
    },
}
_ROW = re.compile(r"^(.*),([-+0-9.eE]+),(\d+),([-+0-9.eE]+),(\d+)\s*$")


@dataclass
class PerfTestSummary:
    """The numbers onnxruntime_perf_test printed; any may be None when its version does not print it."""

    session_creation_s: float | None = None
    first_inference_ms: float | None = None
    total_inference_s: float | None = None
    requests: int | None = None
    average_ms: float | None = None
    peak_working_set_bytes: int | None = None
    percentiles_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.average_ms is not None or self.requests is not None


def parse_perf_test_stdout(text: str) -> PerfTestSummary:
    """Parse the summary lines (see the module docstring)."""
    found: dict[str, float] = {}
    for key, patterns in _FIELDS.items():
        for pat in patterns:
            m = re.search(pat, text, flags=re.M)
            if m:
                try:
                    found[key] = float(m.group(1))
                    break
                except ValueError:
                    continue
    pct = {k[:-2]: v for k, v in found.items() if k in ("min_s", "max_s", "p50_s", "p90_s", "p95_s", "p99_s", "p999_s")}
    req, peak = found.get("requests"), found.get("peak_working_set_bytes")
    return PerfTestSummary(
        session_creation_s=found.get("session_creation_s"),
        first_inference_ms=found.get("first_inference_ms"),
        total_inference_s=found.get("total_inference_s"),
        requests=int(req) if req is not None else None,
        average_ms=found.get("average_ms"),
        peak_working_set_bytes=int(peak) if peak is not None else None,
        percentiles_s=pct,
    )


def parse_perf_test_result_file(text: str) -> list[float]:
    """Per-run latencies in ms, in run order, from the result file's CSV rows (statistics lines ignored)."""
    rows: list[tuple[int, float]] = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            rows.append((int(m.group(5)), float(m.group(2)) * 1000.0))
    return [ms for _, ms in sorted(rows)]


def perf_test_argv(binary: str, model: str, result_file: str, *, repetitions: int, threads: int | None) -> list[str]:
    argv = [binary, "-m", "times", "-r", str(repetitions), "-e", "cpu", "-I", "-s"]
    if threads:
        argv += ["-x", str(threads), "-y", "1"]
    return [*argv, model, result_file]


def timings_from_perf_test(summary: PerfTestSummary, rows_ms: list[float], warmup: int) -> NativeTimings:
    t = NativeTimings(
        load_ms=summary.session_creation_s * 1000.0 if summary.session_creation_s is not None else None,
        first_inference_ms=summary.first_inference_ms,
        warmup_iterations=warmup,
        peak_rss_bytes=summary.peak_working_set_bytes,
    )
    if rows_ms:
        t.samples_ms = rows_ms[warmup:]
    else:
        t.aggregate_iterations = max(0, (summary.requests or 0) - warmup)
        t.aggregate_mean_ms = summary.average_ms
    return t


class OrtPerfTestDriver(NativeToolDriver):
    """devices.yaml ``runner: onnxruntime_perf_test``: ORT's own C++ benchmark, no app in between."""

    name = "onnxruntime_perf_test"
    backends = ("onnx",)
    env_var = "MPK_ONNXRUNTIME_PERF_TEST"
    binary = "onnxruntime_perf_test"
    backend = "onnx"
    unsupported = "onnxruntime_perf_test runs .onnx only"
    summary_only_note = "percentiles-only: the per-run result file could not be read back"

    def _attempt(
        self, target: Target, binary: str, model: str, s: dict, iterations: int, timeout_s: float
    ) -> tuple[NativeTimings | None, tuple[str, str] | None]:
        warmup = int(s["warmup_iterations"])
        cwd = str(Path(model).parent)
        result_file = f"{cwd}/{Path(model).stem}.perf_test.csv"
        affinity = tuple(s["cpu_affinity"]) if s.get("cpu_affinity") else None
        target.execute(["rm", "-f", result_file], cwd=cwd, timeout=30)  # the tool appends to it
        argv = perf_test_argv(binary, model, result_file, repetitions=warmup + iterations, threads=s.get("threads"))
        ex = target.execute(argv, cwd=cwd, timeout=timeout_s, affinity=affinity)
        rows = parse_perf_test_result_file(target.read_text(result_file) or "")
        summary = parse_perf_test_stdout(ex.text)
        if ex.exit_code != 0 or not summary.ok:
            return None, failure(ex, "onnxruntime_perf_test", loaded=summary.session_creation_s is not None)
        return timings_from_perf_test(summary, rows, warmup), None
