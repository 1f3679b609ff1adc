"""Drive ExecuTorch's own ``executor_runner`` binary: the "no app, no JNI" baseline.

``executor_runner`` (examples/portable/executor_runner/executor_runner.cpp) runs one
.pte ``--num_executions`` times and logs through ExecuTorch's PAL. The lines this
module parses, as ExecuTorch v1.4.1 prints them (v1.0.0 logs only the last line and
has no ``--print_output`` flag, which is then dropped and the run repeated; both
forms are checked against the quoted source in tests/fixtures/native_tools/)::

    I 00:00:00.012345 executorch:executor_runner.cpp:626] Model loaded in 12.345000 ms.
    I 00:00:00.020001 executorch:executor_runner.cpp:781] Iteration 1 of 11: 4.500000 ms
    I 00:00:00.070001 executorch:executor_runner.cpp:791] Model executed successfully 11 time(s) in 51.000000 ms.

(``%c %02u:%02u:%02u.%06lu executorch:%s:%zu] %s`` is the POSIX PAL's prefix.)
With per-iteration lines, iteration 1 is ``first_inference_ms``, the next
``warmup_iterations`` are dropped and the rest are the samples. A runner that
prints only the total gives no distribution: the result then has empty
``samples_ms``, ``stats: null`` and says ``timing: aggregate-only`` in
``runner.runtimes``, rather than inventing a spread.

Where it runs: on the host (``kind: host``) as a local process; on Android the
binary is pushed next to the model under ``/data/local/tmp/mpk/`` and run via
the device's Transport. Which binary: ``$MPK_EXECUTOR_RUNNER`` (a local path;
for Android an arm64 build), else ``executor_runner`` on PATH (host), else an
already-pushed ``/data/local/tmp/mpk/bin/executor_runner`` (Android).

The helpers in the "shared" section below are used by native_ort.py too.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpk.errors import DeviceError, RuntimeMissing
from runners.devices import DeviceSpec
from runners.drivers.base import Driver, Probe

REMOTE_ROOT = "/data/local/tmp/mpk"
REMOTE_BIN = f"{REMOTE_ROOT}/bin"


# ---------------------------------------------------------------- shared by the native drivers


@dataclass
class Exec:
    """One finished process: exit status and both streams."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr


class Target:
    """Where a native benchmark binary runs: this host, or a device behind a Transport.

    ``stage`` makes a local file available to the binary and returns the path it
    should use; ``execute`` runs an argv there.
    """

    kind = "host"

    def stage(self, local: Path, rel: str) -> str:
        return str(local)

    def execute(self, argv: list[str], *, cwd: str, timeout: float, affinity: tuple[int, ...] | None = None) -> Exec:
        raise NotImplementedError

    def read_text(self, path: str) -> str | None:
        raise NotImplementedError

    def facts(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalTarget(Target):
    kind = "host"

    def execute(self, argv: list[str], *, cwd: str, timeout: float, affinity: tuple[int, ...] | None = None) -> Exec:
        def pin() -> None:  # runs in the child before exec, so only the benchmark is pinned
            if affinity:
                os.sched_setaffinity(0, set(affinity))

        try:
            p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=pin)
        except subprocess.TimeoutExpired:
            return Exec(124, "", f"timed out after {timeout:.0f} s")
        except OSError as e:
            return Exec(127, "", f"cannot run {argv[0]}: {e}")
        return Exec(p.returncode, p.stdout, p.stderr)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def facts(self) -> dict[str, Any]:
        from runners import devicefacts

        return devicefacts.host_facts()


class DeviceTarget(Target):
    """An Android device: files are pushed (sha256-skipped) under /data/local/tmp/mpk/<run_id>/."""

    kind = "android"

    def __init__(self, device: DeviceSpec, run_id: str) -> None:
        from runners.drivers.android_app import open_transport

        self.device = device
        self.t = open_transport(device)
        self.remote = f"{REMOTE_ROOT}/{run_id}"

    def stage(self, local: Path, rel: str) -> str:
        dest = f"{self.remote}/{rel}"
        self.t.shell(f"mkdir -p {shlex.quote(str(Path(dest).parent))}", timeout=30)
        self.t.push(local, dest)
        return dest

    def execute(self, argv: list[str], *, cwd: str, timeout: float, affinity: tuple[int, ...] | None = None) -> Exec:
        cmd = " ".join(shlex.quote(a) for a in argv)
        if affinity:  # toybox taskset takes a hex CPU mask
            cmd = f"taskset {cpu_mask(affinity)} {cmd}"
        r = self.t.shell(f"cd {shlex.quote(cwd)} && {cmd}", timeout=timeout)
        return Exec(r.exit_code, r.stdout, r.stderr)

    def read_text(self, path: str) -> str | None:
        r = self.t.shell(f"cat {shlex.quote(path)}", timeout=60)
        return r.stdout if r.exit_code == 0 else None

    def facts(self) -> dict[str, Any]:
        from runners.drivers.android_app import AndroidAppDriver

        return AndroidAppDriver().device_facts(self.t)

    def close(self) -> None:
        self.t.close()


def cpu_mask(cpus: tuple[int, ...] | list[int]) -> str:
    """CPU list -> taskset's hex mask: (4, 5, 6, 7) -> 'f0'."""
    return format(sum(1 << c for c in cpus), "x")


def open_target(device: DeviceSpec, run_id: str) -> Target:
    if device.kind == "host":
        return LocalTarget()
    if device.kind in ("android", "emulator"):
        return DeviceTarget(device, run_id)
    raise DeviceError(device.id, f"native runners run on host or Android devices, not {device.kind!r}")


def resolve_binary(target: Target, env_var: str, name: str) -> str:
    """The binary to run on ``target``: $env_var (pushed for devices), PATH (host), or a pre-pushed copy."""
    local = os.environ.get(env_var)
    if local:
        if not Path(local).is_file():
            raise RuntimeMissing(f"${env_var} points to {local}, which is not a file")
        if isinstance(target, LocalTarget):
            return local
        dest = f"{REMOTE_BIN}/{name}"
        target.t.shell(f"mkdir -p {REMOTE_BIN}", timeout=30)  # type: ignore[attr-defined]
        target.t.push(Path(local), dest)  # type: ignore[attr-defined]
        target.t.shell(f"chmod 755 {dest}", timeout=30)  # type: ignore[attr-defined]
        return dest
    if isinstance(target, LocalTarget):
        found = shutil.which(name)
        if found:
            return found
    else:
        dest = f"{REMOTE_BIN}/{name}"
        if target.t.shell(f"test -x {dest}", timeout=30).exit_code == 0:  # type: ignore[attr-defined]
            return dest
    raise RuntimeMissing(
        f"{name} not found",
        hint=f"build it from the runtime's source tree and set {env_var}=/path/to/{name} "
        f"(an arm64-v8a build for Android devices)",
    )


@dataclass
class NativeTimings:
    """What a native runner's output yields for one artifact (any field may be missing)."""

    load_ms: float | None = None
    first_inference_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list)
    warmup_iterations: int = 0
    #: iterations timed when only an aggregate was printed (samples_ms then stays empty)
    aggregate_iterations: int = 0
    aggregate_mean_ms: float | None = None
    peak_rss_bytes: int | None = None


def artifact_result(art: dict[str, Any], t: NativeTimings | None, error: tuple[str, str] | None) -> dict[str, Any]:
    """One schema-valid artifact_result. Stats come only from real per-iteration samples."""
    from runners.stats import LatencyStats

    base = {"id": art["id"], "backend": art["backend"], "scheme": art["scheme"]}
    if error is not None:
        return {**base, "status": "error", "error": {"kind": error[0], "message": error[1]}}
    assert t is not None
    samples = t.samples_ms
    return {
        **base,
        "status": "ok",
        "error": None,
        "load_ms": t.load_ms,
        "first_inference_ms": t.first_inference_ms,
        "warmup_iterations": t.warmup_iterations,
        "iterations": len(samples) if samples else t.aggregate_iterations,
        "samples_ms": samples,
        "stats": LatencyStats.from_samples(samples).to_dict() if samples else None,
        # Native runners report no pre-load baseline, so rise_mb cannot be given honestly.
        "memory": None,
        "accuracy": None,
    }


def build_result(
    spec: dict[str, Any], device: DeviceSpec, runner: str, runtimes: dict[str, str], facts: dict[str, Any],
    started: str, artifacts: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """A runner_result document around ``artifacts`` (validated by the caller's contract check)."""
    from mpk import __version__
    from runners.host_runner import utc_now

    keep = ("model", "manufacturer", "soc", "abi", "os", "os_version", "cores", "governor", "cpu_max_freq_khz",
            "host_cpu", "temperatures_c_before", "temperatures_c_after", "battery")  # fmt: skip
    dev = {k: v for k, v in {**facts, **(device.facts or {})}.items() if k in keep}
    return {
        "schema_version": "mpk.runner-result/1",
        "run_id": spec["run_id"],
        "device_id": spec["device_id"],
        "runner": {"name": runner, "version": f"mpk {__version__}", "runtimes": runtimes},
        "emulated": device.kind == "emulator",
        "device": dev,
        "settings": spec["settings"],
        "started_utc": started,
        "finished_utc": utc_now(),
        "artifacts": artifacts,
    }


def plan_iterations(settings: dict[str, Any], mean_ms: float | None) -> int:
    """Timed iterations for a fixed-count runner: min_iterations, raised to cover min_seconds at ``mean_ms``
    and capped by max_seconds (never below min_iterations... unless max_seconds says so, as the host runner)."""
    n = int(settings["min_iterations"])
    if mean_ms and mean_ms > 0:
        need = math.ceil(settings["min_seconds"] * 1000.0 / mean_ms)
        n = max(n, need)
        if settings.get("max_seconds"):
            n = max(1, min(n, math.floor(settings["max_seconds"] * 1000.0 / mean_ms)))
    return n


# ---------------------------------------------------------------- executor_runner

_LOAD = re.compile(r"Model loaded in ([0-9.]+) ms\.")
_ITER = re.compile(r"Iteration (\d+) of (\d+): ([0-9.]+) ms")
_TOTAL = re.compile(r"Model executed successfully (\d+) time\(s\) in ([0-9.]+) ms\.")


@dataclass
class ExecutorRunnerOutput:
    load_ms: float | None
    #: per-iteration times in execution order (1-based iteration i at index i-1)
    iterations_ms: list[float]
    executions: int | None
    total_ms: float | None

    @property
    def ok(self) -> bool:
        return self.executions is not None


def parse_executor_runner(text: str) -> ExecutorRunnerOutput:
    """Parse executor_runner's log (stdout and stderr together); see the module docstring for the lines."""
    load = _LOAD.search(text)
    iters = sorted((int(m.group(1)), float(m.group(3))) for m in _ITER.finditer(text))
    total = _TOTAL.search(text)
    return ExecutorRunnerOutput(
        load_ms=float(load.group(1)) if load else None,
        iterations_ms=[ms for _, ms in iters],
        executions=int(total.group(1)) if total else None,
        total_ms=float(total.group(2)) if total else None,
    )


#: what gflags prints for a flag the binary does not define (runners before ExecuTorch 1.3 lack --print_output)
_NO_PRINT_OUTPUT_FLAG = "unknown command line flag 'print_output'"


def executor_runner_argv(
    binary: str, model: str, *, executions: int, threads: int | None, print_output: bool = True
) -> list[str]:
    """The command line. ``--print_output none`` (1.3+) keeps megabytes of logits out of the log we parse."""
    argv = [binary, f"--model_path={model}", f"--num_executions={executions}"]
    if print_output:
        argv.append("--print_output=none")
    if threads:
        argv.append(f"--cpu_threads={threads}")
    return argv


def timings_from_executor_runner(out: ExecutorRunnerOutput, warmup: int) -> NativeTimings:
    """Split iteration 1 (first inference), the next ``warmup`` (dropped) and the timed rest."""
    t = NativeTimings(load_ms=out.load_ms, warmup_iterations=warmup)
    if out.iterations_ms:
        t.first_inference_ms = out.iterations_ms[0]
        t.samples_ms = out.iterations_ms[1 + warmup :]
    elif out.executions and out.total_ms is not None:
        # aggregate-only runner: the mean includes the first and warm-up runs, and says so via runtimes
        t.aggregate_iterations = out.executions
        t.aggregate_mean_ms = out.total_ms / out.executions
    return t


class NativeToolDriver(Driver):
    """A driver around a native benchmark binary found via ``env_var``, the PATH, or pushed to the device.

    A subclass names its tool and says how one run goes (:meth:`_attempt`); staging, the two-pass
    iteration plan and the result document are the same for every tool.
    """

    env_var: str
    binary: str
    #: the one backend this tool runs, and what an artifact of another backend is told
    backend: str
    unsupported: str
    #: ``runtimes["timing"]`` when a run yields no per-iteration samples, only a summary
    summary_only_note: str

    def probe(self, device: DeviceSpec) -> Probe:
        try:
            target = open_target(device, "probe")
            try:
                return Probe(True, f"{self.binary} at {resolve_binary(target, self.env_var, self.binary)}")
            finally:
                target.close()
        except (RuntimeMissing, DeviceError) as e:
            return Probe(False, e.format_message())

    def run(self, spec_dir: Path, spec: dict[str, Any], device: DeviceSpec, *, timeout_s: float = 3600) -> dict:
        from mpk.contract import validate_result
        from runners.host_runner import utc_now

        started = utc_now()
        target = open_target(device, spec["run_id"])
        try:
            binary = resolve_binary(target, self.env_var, self.binary)
            facts = target.facts()
            arts, summary_only = [], False
            for art in spec["artifacts"]:
                if art["backend"] != self.backend:
                    arts.append(artifact_result(art, None, ("unsupported", self.unsupported)))
                    continue
                for extra in art.get("extra_files") or []:  # external weights must sit next to the model
                    target.stage(Path(spec_dir) / extra, extra)
                model = target.stage(Path(spec_dir) / art["path"], art["path"])
                (timings, err), no_samples = self._measure(target, binary, model, spec["settings"], timeout_s)
                summary_only |= no_samples
                arts.append(artifact_result(art, timings, err))
        finally:
            target.close()
        runtimes = {self.binary: binary}
        if summary_only:
            runtimes["timing"] = self.summary_only_note
        result = build_result(spec, device, self.name, runtimes, facts, started, arts)
        return validate_result(result, what=f"{self.binary} result for {device.id}")

    def _attempt(
        self, target: Target, binary: str, model: str, s: dict, iterations: int, timeout_s: float
    ) -> tuple[NativeTimings | None, tuple[str, str] | None]:
        """One run of the tool with ``iterations`` timed iterations: its timings, or (kind, message)."""
        raise NotImplementedError

    def _measure(
        self, target: Target, binary: str, model: str, s: dict, timeout_s: float
    ) -> tuple[tuple[NativeTimings | None, tuple[str, str] | None], bool]:
        """min_iterations first; a fixed-count tool runs again, long enough for min_seconds, if that was short.

        Returns ((timings, error), True when the timings hold no per-iteration samples).
        """
        t, err = self._attempt(target, binary, model, s, int(s["min_iterations"]), timeout_s)
        if t is None:
            return (None, err), False
        mean = (sum(t.samples_ms) / len(t.samples_ms)) if t.samples_ms else t.aggregate_mean_ms
        n = plan_iterations(s, mean)
        if n > int(s["min_iterations"]):
            again, err2 = self._attempt(target, binary, model, s, n, timeout_s)
            if again is not None and err2 is None:
                t = again
        return (t, None), not t.samples_ms


def failure(ex: Exec, what: str, loaded: bool) -> tuple[str, str]:
    """(kind, message) for a tool run that exited non-zero or printed no result."""
    kind = "timeout" if ex.exit_code == 124 else ("inference" if loaded else "load")
    tail = " ".join(ex.text.strip().splitlines()[-3:])[-600:]
    return kind, f"{what} exited {ex.exit_code}: {tail}"


class ExecutorRunnerDriver(NativeToolDriver):
    """devices.yaml ``runner: executor_runner``: ExecuTorch's C++ runner, no app in between."""

    name = "executor_runner"
    backends = ("executorch",)
    env_var = "MPK_EXECUTOR_RUNNER"
    binary = "executor_runner"
    backend = "executorch"
    unsupported = "executor_runner runs .pte files only"
    summary_only_note = "aggregate-only: this executor_runner prints no per-iteration times"

    def _attempt(
        self, target: Target, binary: str, model: str, s: dict, iterations: int, timeout_s: float
    ) -> tuple[NativeTimings | None, tuple[str, str] | None]:
        warmup = int(s["warmup_iterations"])
        affinity = tuple(s["cpu_affinity"]) if s.get("cpu_affinity") else None
        argv = executor_runner_argv(binary, model, executions=1 + warmup + iterations, threads=s.get("threads"))
        ex = target.execute(argv, cwd=str(Path(model).parent), timeout=timeout_s, affinity=affinity)
        if ex.exit_code != 0 and _NO_PRINT_OUTPUT_FLAG in ex.text:  # a 1.0-1.2 runner: ask again without it
            argv = [a for a in argv if not a.startswith("--print_output")]
            ex = target.execute(argv, cwd=str(Path(model).parent), timeout=timeout_s, affinity=affinity)
        out = parse_executor_runner(ex.text)
        if ex.exit_code != 0 or not out.ok:
            return None, failure(ex, "executor_runner", loaded=out.load_ms is not None)
        return timings_from_executor_runner(out, warmup), None
