"""The host runner: ``python -m runners.host_runner --spec SPEC.json --out RESULT.json``.

Reads a runner spec, measures every artifact on this machine and writes one
runner result (mpk/contract/schemas/runner_result.schema.json). Each artifact runs
in a FRESH child process, so its memory numbers belong to that artifact alone
and a runtime that crashes takes down only its own measurement. The child:

1. pins itself (``os.sched_setaffinity``) and sets the thread count,
2. imports and loads the runtime, THEN reads the baseline RSS and resets the RSS high-water mark,
3. loads the model (``load_ms``), runs once (``first_inference_ms``), warms up,
4. times at least ``min_iterations`` AND at least ``min_seconds`` with
   ``time.perf_counter_ns``; ``max_seconds`` cuts a model too slow for ``min_iterations``
   short (``iterations`` then says how many ran),
5. reads the peak RSS (VmHWM) right after the timed loop, BEFORE the accuracy pass, which then
   compares the outputs with the reference tensors (:mod:`mpk.metrics`).

Steps 2 and 5 are mpk's one memory definition (runners/memory.py); the Android and iOS apps
implement the same order.

Exit 0 whenever a result was written, even if artifacts failed (each failure
is in the result); non-zero only when no result could be written. mpk's
virtual Android device runs this same program with ``--emulated``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mpk import metrics

CHILD_FLAG = "--child-index"
_NP_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "i1", "uint8": "u1", "int32": "<i4", "int64": "<i8",
              "bool": "?"}  # fmt: skip


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- accuracy (the one helper)


def accuracy_metrics(pred: list[list[np.ndarray]], ref: list[list[np.ndarray]], *, task: str | None = None) -> dict:
    """Agreement of ``pred`` with the fp32 reference over N samples (outer list), all outputs (inner).

    The numbers are :func:`mpk.metrics.compare`'s (per-sample cosine, SNR, max error, top-1 of the
    first output): the same definitions ``mpk package`` verified the artifact with.
    ``top1_agreement`` is None unless the task is classification (or, with no task given, the first
    output looks like (1, C) logits with C > 1).

    >>> r = [[np.array([[1.0, 2.0]])]]
    >>> accuracy_metrics(r, r)["cosine"]
    1.0
    """
    first_ref = np.asarray(ref[0][0])
    looks_like_logits = first_ref.ndim == 2 and first_ref.shape[0] == 1 and first_ref.shape[1] > 1
    classifier = task == "classification" or (task is None and looks_like_logits)
    if len(pred) != len(ref):
        raise ValueError(f"{len(pred)} predictions for {len(ref)} reference samples")
    declared = task if task in metrics.TASKS else None  # language-model / segmentation: per-position / per-pixel
    stacked = metrics.stack(ref), metrics.stack(pred)
    m = metrics.compare(*stacked, classifier=classifier, task=declared)
    m.pop("top1_decisions")  # the result contract carries the count that was clear, as the apps write it
    return {"samples": len(ref), **m}


# ---------------------------------------------------------------- reference tensors


def load_reference(spec: dict, spec_dir: Path) -> tuple[list[tuple[np.ndarray, ...]], list[list[np.ndarray]]] | None:
    """The spec's reference as (inputs per sample, outputs per sample); each sample keeps its batch dim."""
    ref = spec.get("reference")
    if not ref:
        return None
    n = ref["samples"]

    def read(entries: list[dict]) -> list[np.ndarray]:
        out = []
        for e in entries:
            raw = np.fromfile(spec_dir / e["path"], dtype=_NP_DTYPES[e["dtype"]])
            out.append(raw.reshape(n, *e["shape"]))
        return out

    ins, outs = read(ref["inputs"]), read(ref["outputs"])
    return [tuple(a[i] for a in ins) for i in range(n)], [[a[i] for a in outs] for i in range(n)]


def synthetic_inputs(artifact: dict) -> tuple[np.ndarray, ...]:
    """Seeded random inputs from the artifact's tensor specs (dynamic dims -> 1) when no reference exists."""
    rng = np.random.default_rng(0)
    arrays = []
    for t in artifact.get("inputs") or []:
        shape = [d if isinstance(d, int) else 1 for d in t["shape"]]
        dt = np.dtype(_NP_DTYPES[t["dtype"]])
        arrays.append(rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt))
    if not arrays:
        raise ValueError("the spec has neither reference tensors nor input specs for this artifact")
    return tuple(arrays)


# ---------------------------------------------------------------- opening a session


def _load_runtime(backend: str, threads: int) -> Any:
    """Import and load the runtime, so the baseline RSS read next already holds it; return ``open(path)``.

    Everything the runtime needs before a model exists (the Python modules, ExecuTorch's native
    runtime, mpk's session class) is in memory before the baseline: ``rise_mb`` is then what the
    model itself costs, on the host as in the apps (see runners/memory.py).
    """
    if backend == "coreml" and sys.platform != "darwin":
        from mpk.errors import RuntimeMissing

        raise RuntimeMissing(f"coreml artifacts need macOS; this host is {sys.platform}")
    if backend == "onnx":
        import onnxruntime  # noqa: F401
    elif backend == "executorch":
        import torch
        from executorch.runtime import Runtime

        torch.set_num_threads(threads)
        try:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        except (ImportError, AttributeError, RuntimeError):
            pass  # an executorch build without the hook: XNNPACK uses its default pool size
        Runtime.get()  # loads the native runtime and its kernels
    from packager.runtime import session_opener

    return session_opener(backend, threads=threads)  # imports mpk's session class for this backend now


# ---------------------------------------------------------------- the child: one artifact


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _error(artifact: dict, kind: str, message: str, **extra: Any) -> dict:
    return {"id": artifact["id"], "backend": artifact["backend"], "scheme": artifact["scheme"], "status": "error",
            "error": {"kind": kind, "message": message[-4000:]}, **extra}  # fmt: skip


def measure_artifact(spec: dict, spec_dir: Path, index: int, progress: Path) -> dict:
    """Measure artifact ``index`` in THIS process. Writes the phase to ``progress`` so a crash is attributed."""
    from mpk.errors import RuntimeMissing
    from runners import memory
    from runners.stats import LatencyStats

    art, s = spec["artifacts"][index], spec["settings"]
    threads = s["threads"]

    def phase(name: str) -> None:
        progress.write_text(name)

    phase("setup")
    if s.get("cpu_affinity"):
        try:
            os.sched_setaffinity(0, s["cpu_affinity"])
        except (OSError, AttributeError) as e:  # CPUs this machine lacks: refuse rather than time unpinned
            return _error(art, "other", f"cannot pin to CPUs {s['cpu_affinity']}: {e}")
    try:
        opener = _load_runtime(art["backend"], threads)
    except RuntimeMissing as e:
        return _error(art, "unsupported", e.message)
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] in ("mpk", "packager", "runners"):
            raise  # mpk's own code is always installed: that would be a bug, not a missing runtime
        return _error(art, "unsupported", f"the {art['backend']} runtime is not installed here (no module "
                                          f"{e.name!r}): pip install 'mpk[host]'")  # fmt: skip
    path = spec_dir / art["path"]
    if not path.exists():
        return _error(art, "load", f"artifact file not found: {art['path']}")
    digest = _sha256(path) if path.is_file() else art["sha256"]
    if digest != art["sha256"]:
        return _error(art, "load", f"sha256 mismatch for {art['path']}: spec {art['sha256']}, file {digest}")
    reference = load_reference(spec, spec_dir)
    try:
        inputs = reference[0][0] if reference else synthetic_inputs(art)
    except ValueError as e:
        return _error(art, "other", str(e))

    baseline = memory.rss_mb()
    reset_ok = memory.reset_peak()
    phase("load")
    t0 = time.perf_counter_ns()
    try:
        session = opener(path)
    except RuntimeMissing as e:
        return _error(art, "unsupported", e.message)
    except MemoryError as e:
        return _error(art, "oom", f"out of memory while loading: {e}")
    except Exception as e:  # the runtime's own message is the most useful thing we can show
        return _error(art, "load", f"{type(e).__name__}: {e}")
    load_ms = (time.perf_counter_ns() - t0) / 1e6

    phase("inference")
    try:
        t0 = time.perf_counter_ns()
        session.run(inputs)
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        for _ in range(s["warmup_iterations"]):
            session.run(inputs)
        samples: list[float] = []
        min_ns, max_s = s["min_seconds"] * 1e9, s.get("max_seconds")
        max_ns = max_s * 1e9 if max_s is not None else None
        start = time.perf_counter_ns()
        while True:
            elapsed = time.perf_counter_ns() - start
            if len(samples) >= s["min_iterations"] and elapsed >= min_ns:
                break
            # max_seconds caps a model too slow for min_iterations; the result then says how many ran
            if max_ns is not None and samples and elapsed >= max_ns:
                break
            t0 = time.perf_counter_ns()
            session.run(inputs)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
    except MemoryError as e:
        return _error(art, "oom", f"out of memory during inference: {e}", load_ms=load_ms)
    except Exception as e:
        return _error(art, "inference", f"{type(e).__name__}: {e}", load_ms=load_ms)
    peak = memory.hwm_mb()

    phase("accuracy")
    acc = None
    if reference:
        try:
            preds = [session.run(x) for x in reference[0]]
            acc = accuracy_metrics(preds, reference[1], task=(spec.get("reference") or {}).get("task"))
        except Exception as e:
            return _error(art, "inference", f"on reference inputs: {type(e).__name__}: {e}", load_ms=load_ms)
    mem = None
    if baseline is not None and peak is not None:
        mem = {"baseline_rss_mb": baseline, "peak_rss_mb": peak, "rise_mb": max(0.0, peak - baseline),
               "pss_mb": None, "source": memory.read_source(reset_ok)}  # fmt: skip
    return {
        "id": art["id"], "backend": art["backend"], "scheme": art["scheme"], "status": "ok", "error": None,
        "load_ms": load_ms, "first_inference_ms": first_ms, "warmup_iterations": s["warmup_iterations"],
        "iterations": len(samples), "samples_ms": samples,
        "stats": LatencyStats.from_samples(samples).to_dict(), "memory": mem, "accuracy": acc,
    }  # fmt: skip


def profile_pass(spec: dict, spec_dir: Path, index: int, stats: dict[str, Any]) -> dict:
    """The separate profiled pass, after the timed loop and the accuracy pass (:mod:`packager.profiling`).

    Its numbers never enter ``samples_ms``; it is compared with them (``vs_p50``, ``overhead``). A profile that
    fails is reported as unavailable with the reason: the measurement it follows stands.
    """
    from mpk.contract.profile import finish, unavailable
    from packager.runtime import profile_artifact

    art = spec["artifacts"][index]
    files = {k: spec_dir / v for k, v in (art.get("profiling") or {}).items()}
    try:
        reference = load_reference(spec, spec_dir)
        inputs = reference[0][0] if reference else synthetic_inputs(art)
        prof = profile_artifact(art["backend"], art["scheme"], spec_dir / art["path"], inputs,
                                threads=spec["settings"]["threads"], files=files)  # fmt: skip
    except Exception as e:  # the runtime's own words are the useful part
        prof = unavailable("the profiled pass failed", f"{type(e).__name__}: {str(e)[:2000]}")
    return dict(finish(prof, p50_ms=stats.get("p50_ms"), mean_ms=stats.get("mean_ms")))


def _child_main(spec_path: Path, index: int, out: Path) -> int:
    from mpk.contract import read_spec

    spec = read_spec(spec_path)
    progress = out.with_suffix(".phase")
    result = measure_artifact(spec, spec_path.parent, index, progress)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    out.write_text(json.dumps({"pid": os.getpid(), "affinity": affinity, "result": result}))
    if spec["settings"].get("profile") and result["status"] == "ok":
        # written first, so a profiler that takes the process down loses the profile, not the measurement
        progress.write_text("profile")
        result["profile"] = profile_pass(spec, spec_path.parent, index, result["stats"])
        out.write_text(json.dumps({"pid": os.getpid(), "affinity": affinity, "result": result}))
    return 0


# ---------------------------------------------------------------- the parent: one process per artifact


def _runtime_versions() -> dict[str, str]:
    out = {}
    for dist in ("onnxruntime", "executorch", "torch", "coremltools"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _phase(phase_file: Path) -> str:
    return phase_file.read_text() if phase_file.exists() else "setup"


def _without_profile(out: Path, why: str) -> dict:
    """The measurement the child wrote before its profiled pass died, with the profile said unavailable."""
    from mpk.contract.profile import unavailable

    result = json.loads(out.read_text())["result"]
    result["profile"] = unavailable("the profiled pass", why)
    return result


def run_artifact_subprocess(spec_path: Path, index: int, artifact: dict, threads: int, timeout_s: float) -> dict:
    """Run one artifact in a fresh interpreter and return its artifact_result (errors included)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="mpk-art-") as tmp:
        out = Path(tmp) / "artifact.json"
        cmd = [sys.executable, "-m", "runners.host_runner", "--spec", str(spec_path), "--out", str(out),
               CHILD_FLAG, str(index)]  # fmt: skip
        phase_file = out.with_suffix(".phase")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            if _phase(phase_file) == "profile" and out.exists():
                return _without_profile(out, f"the profiled pass ran past the artifact's {timeout_s:.0f} s: {e}")
            return _error(artifact, "timeout", f"no result after {timeout_s:.0f} s")
        phase = _phase(phase_file)
        if proc.returncode != 0 and phase == "profile" and out.exists():
            tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
            return _without_profile(out, f"the runner process exited with {proc.returncode} while profiling: {tail}")
        if proc.returncode == 0 and out.exists():
            payload = json.loads(out.read_text())
            print(f"mpk host_runner: artifact {artifact['id']} ran in pid {payload['pid']} "
                  f"on cpus {payload['affinity']}", file=sys.stderr)  # fmt: skip
            return payload["result"]
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        # The phase the child had reached says what died: a crash inside load is a load error.
        if proc.returncode in (-9, 137):
            kind = "oom"
        else:
            kind = {"load": "load", "inference": "inference", "accuracy": "inference"}.get(phase, "crash")
        return _error(artifact, kind, f"runner process exited with {proc.returncode} during {phase}: {tail}")


def run_spec(spec_path: Path, *, emulated: bool = False, device_facts: dict | None = None,
             timeout_s: float | None = None) -> dict:  # fmt: skip
    """Measure every artifact of the spec at ``spec_path``; return a schema-valid runner result."""
    from mpk import __version__
    from mpk.contract import RESULT_VERSION, read_spec, validate_result
    from runners import devicefacts

    spec_path = Path(spec_path).resolve()
    spec = read_spec(spec_path)
    s = spec["settings"]
    facts = devicefacts.host_facts()
    if device_facts:
        facts.update(device_facts)
        facts["host_cpu"] = devicefacts.cpu_model()  # the CPU that really ran the numbers, whatever the facts say
        facts.update(devicefacts.int8_facts())  # and the int8 kernels it ran them with
    started = utc_now()
    facts["temperatures_c_before"] = devicefacts.temperatures_c()
    # a profiled pass may lower an ExecuTorch model unit by unit (packager/export/et_estimate.py): minutes
    per_artifact_timeout = timeout_s or (300.0 + 2 * (s.get("max_seconds") or 600.0) + (900.0 if s.get("profile")
                                                                                         else 0.0))  # fmt: skip
    results = [
        run_artifact_subprocess(spec_path, i, a, s["threads"], per_artifact_timeout)
        for i, a in enumerate(spec["artifacts"])
    ]
    facts["temperatures_c_after"] = devicefacts.temperatures_c()
    settings = {k: s.get(k) for k in ("threads", "cpu_affinity", "warmup_iterations", "min_iterations",
                                      "min_seconds", "max_seconds")}  # fmt: skip
    if s.get("profile"):
        settings["profile"] = True
    result = {
        "schema_version": RESULT_VERSION,
        "run_id": spec["run_id"],
        "device_id": spec["device_id"],
        "runner": {"name": "host", "version": __version__, "runtimes": _runtime_versions()},
        "emulated": emulated,
        "device": facts,
        "settings": settings,
        "started_utc": started,
        "finished_utc": utc_now(),
        "artifacts": results,
    }
    return validate_result(result, what="host runner result")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.host_runner", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--emulated", action="store_true", help="mark the result as emulated (virtual device)")
    ap.add_argument("--device-facts", type=Path, help="JSON object of device facts that override the host's")
    ap.add_argument("--timeout-s", type=float, help="per-artifact time limit (default 300 + 2*max_seconds)")
    ap.add_argument(CHILD_FLAG, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from mpk.contract import write_result
    from mpk.errors import MpkError

    try:
        if args.child_index is not None:
            return _child_main(args.spec, args.child_index, args.out)
        facts = json.loads(args.device_facts.read_text()) if args.device_facts else None
        result = run_spec(args.spec, emulated=args.emulated, device_facts=facts, timeout_s=args.timeout_s)
        write_result(args.out, result)
    except MpkError as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except (OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
