"""The profiled pass on this host: what each runtime can say per operator, and nothing it cannot.

Called by the host runner (through :func:`packager.runtime.profile_artifact`) after the timed loop and the
accuracy pass, on a session of its own, so profiling never touches the timed samples:

* **ONNX Runtime** times every node itself (``SessionOptions.enable_profiling``: one ``<node>_kernel_time``
  event per node per run, with ``op_name`` and ``provider``). A profiled run is slower than an unprofiled one
  (ORT timestamps and records memory for every node); the result states by how much (``overhead``). Status
  ``measured``.
* **ExecuTorch** first asks its runtime for an ETDump. The PyPI wheel's pybindings are built without the event
  tracer, so there is none ("No etdump data found, try rebuilding with the CMake option
  EXECUTORCH_ENABLE_EVENT_TRACER"); the profile then says so in ``limits`` and carries mpk's per-unit
  estimate instead (:mod:`packager.export.et_estimate`), status ``estimated``. A runtime built with the event
  tracer would hand back an ETDump; reading it (ExecuTorch's Inspector with the package's ETRecord) is not
  done here, and the limits say that too, rather than pretending.
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from mpk.contract.profile import Profile, ProfileStatus, unavailable
from mpk.profiling import aggregate, ort_events

#: profiled inferences per artifact (after WARMUP untimed ones); enough for stable per-op means, short
#: enough that a profile costs seconds
RUNS = 20
WARMUP = 3
ETDUMP_MISSING = ("this ExecuTorch runtime (executorch {version}, the PyPI wheel's pybindings) is built without "
                  "EXECUTORCH_ENABLE_EVENT_TRACER: loading with enable_etdump=True gives no ETDump ('No etdump "
                  "data found, try rebuilding with the CMake option EXECUTORCH_ENABLE_EVENT_TRACER'), and XNNPACK "
                  "runs the model as {calls} delegate call(s) nothing outside can time op by op")  # fmt: skip


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def profile_onnx(path: Path, inputs: tuple[np.ndarray, ...], *, threads: int | None, runs: int = RUNS,
                 warmup: int = WARMUP) -> Profile:  # fmt: skip
    """ONNX Runtime's own per-node timings, on a session made with the timed loop's options plus profiling."""
    from packager.export.onnx import OnnxSession

    with tempfile.TemporaryDirectory(prefix="mpk-ortprof-") as tmp:
        sess = OnnxSession(Path(path), threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(warmup):
            sess.run(inputs)
        walls = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(inputs)
            walls.append((time.perf_counter_ns() - t0) / 1e6)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    events, seen = ort_events(trace)
    timed = [e for e in events if e.run >= warmup]
    ops = aggregate(timed, runs)
    notes = []
    if seen != runs + warmup:
        notes.append(f"ORT's profile holds {seen} runs, {runs + warmup} were made")
    return {"status": ProfileStatus.MEASURED.value, "granularity": "operator",
            "method": "onnxruntime SessionOptions.enable_profiling: per-node _kernel_time events (op_name, provider)",
            "runtime": f"onnxruntime {_version('onnxruntime')}", "runs": runs, "ops": ops,  # type: ignore[typeddict-item]
            "profiled_ms": float(np.mean(walls)), "notes": notes}  # fmt: skip


def profile_executorch(path: Path, inputs: tuple[np.ndarray, ...], files: dict[str, Path], *,
                       runs: int = RUNS, max_seconds: float = 600.0) -> Profile:  # fmt: skip
    """The ETDump when the runtime records one (it does not here: say so), else mpk's per-unit estimate."""
    from mpk.contract.profile import read_opmap

    version = _version("executorch")
    opmap = read_opmap(files["op_map"]) if files.get("op_map") else None
    calls = len({n.get("delegate_call") for n in (opmap or {}).get("nodes", []) if n.get("delegate_call")}) or "?"
    limits = [ETDUMP_MISSING.format(version=version, calls=calls)]
    if _etdump_recorded(path, inputs):
        limits = ["this ExecuTorch runtime records an ETDump, but mpk does not read ETDumps yet (ExecuTorch's "
                  "Inspector with the package's ETRecord does): the per-unit estimate below stands in"]  # fmt: skip
    if opmap is None or not files.get("etrecord"):
        return unavailable("ExecuTorch: no per-op timing from this runtime, and the package has no ETRecord + op "
                           "map to estimate from", *limits, runtime=f"executorch {version}")  # fmt: skip
    from packager.export.et_estimate import estimate

    prof = estimate(Path(files["etrecord"]), opmap, inputs, runs=runs, max_seconds=max_seconds)
    prof["runtime"] = f"executorch {version}"
    prof["limits"] = limits
    return prof


def _etdump_recorded(path: Path, inputs: tuple[np.ndarray, ...]) -> bool:
    """Run once with ETDump requested and see whether the runtime recorded anything."""
    import torch
    from executorch.extension.pybindings import portable_lib

    with tempfile.TemporaryDirectory(prefix="mpk-etdump-") as tmp:
        try:
            module = portable_lib._load_for_executorch(str(path), enable_etdump=True, debug_buffer_size=0)
            module.forward([torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
            if not module.has_etdump():
                return False
            dump = Path(tmp) / "out.etdp"
            module.write_etdump_result_to_file(str(dump), str(Path(tmp) / "debug.bin"))
        except Exception:  # a runtime that refuses etdump outright has none to give
            return False
        return dump.exists() and dump.stat().st_size > 0


def profile_artifact(backend: str, scheme: str, path: Path, inputs: tuple[np.ndarray, ...], *, threads: int | None,
                     files: dict[str, Path] | None = None, runs: int = RUNS) -> Profile:  # fmt: skip
    """The profile of one artifact on this host's runtime for ``backend`` (module docstring).

    An ONNX int8 profile measures the host's int8 kernels as they run, so it is labelled with them
    (:func:`mpk.hostcpu.isa_label`: VNNI, or AVX2's saturating ``vpmaddubsw``), not with the graph's reference
    arithmetic verification judged.
    """
    files = files or {}
    if backend == "onnx":
        prof = profile_onnx(path, inputs, threads=threads, runs=runs)
        if scheme.startswith("int8"):
            from mpk.hostcpu import isa_label

            prof["kernel"] = isa_label()
        return prof
    if backend == "executorch":
        return profile_executorch(path, inputs, files, runs=runs)
    return unavailable(f"{backend}: the host runner has no profiler for this backend", runtime=None)
