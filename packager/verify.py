"""Numeric verification: run each artifact on the host runtime and compare with fp32 PyTorch.

Metrics over the evaluation set: ``max_abs_error``, ``cosine``, ``snr_db`` and ``top1_agreement``
as defined once in :mod:`mpk.metrics` (the same numbers the bench measures on a device and the
gate's accuracy floors bound), plus ``accuracy`` and ``fp32_accuracy`` when labels are known.

Default tolerances were calibrated on this repo's models (digits-cnn, EfficientNet-Lite0):
e.g. int8 min_top1_agreement 0.95 means at most 5 of 100 images may change their top-1 class.
An artifact the host cannot run (CoreML off macOS) is "skipped" with ``passed=None``: never passed.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from mpk.errors import RuntimeMissing
from mpk.metrics import accuracy
from mpk.metrics import compare as compare_outputs
from packager.types import Dataset, ExportedArtifact

#: tolerance keys a recipe may set; the metric each one bounds and the direction
TOLERANCE_KEYS: dict[str, tuple[str, str]] = {
    "min_cosine": ("cosine", ">="),
    "min_top1_agreement": ("top1_agreement", ">="),
    "min_snr_db": ("snr_db", ">="),
    "max_abs_error": ("max_abs_error", "<="),
    "max_accuracy_drop": ("accuracy_drop", "<="),
}

DEFAULT_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"min_cosine": 0.9999, "min_top1_agreement": 0.99},
    "fp16": {"min_cosine": 0.999, "min_top1_agreement": 0.98},
    "int8": {"min_cosine": 0.97, "min_top1_agreement": 0.95, "max_accuracy_drop": 0.02},
    "int8-dynamic": {"min_cosine": 0.97, "min_top1_agreement": 0.95, "max_accuracy_drop": 0.02},
    "palettize8": {"min_cosine": 0.99, "min_top1_agreement": 0.95},
    "palettize6": {"min_cosine": 0.98, "min_top1_agreement": 0.93},
    "palettize4": {"min_cosine": 0.93, "min_top1_agreement": 0.85},
}


def tolerances_for(scheme: str, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Default tolerances for ``scheme`` (int8's for an unknown one) updated by the recipe's."""
    tol = dict(DEFAULT_TOLERANCES.get(scheme, DEFAULT_TOLERANCES["int8"]))
    tol.update((overrides or {}).get(scheme, {}))
    return tol


def compute_metrics(
    reference: list[np.ndarray],
    actual: list[np.ndarray],
    *,
    classifier: bool = False,
    task: str | None = None,
    labels: np.ndarray | None = None,
) -> dict[str, float | int | None]:
    """:func:`mpk.metrics.compare` plus accuracy against ``labels`` where they exist (classifiers).

    ``task`` says how top-1 agreement is counted (:data:`mpk.metrics.TASKS`); ``classifier=True`` is
    ``task="classification"``.

    ``reference``/``actual``: one array per output, leading axis = sample.

    >>> r = [np.array([[[1.0, 0.0]], [[0.0, 1.0]]])]
    >>> compute_metrics(r, r, classifier=True)["top1_agreement"]
    1.0
    """
    task = task or ("classification" if classifier else None)
    m: dict[str, float | int | None] = {**compare_outputs(reference, actual, task=task),
                                        "accuracy": None, "fp32_accuracy": None}  # fmt: skip
    if task == "classification" and labels is not None:
        m["accuracy"] = accuracy(actual[0], labels)
        m["fp32_accuracy"] = accuracy(reference[0], labels)
    return m


def check(metrics: dict[str, float | int | None], tolerances: dict[str, float]) -> list[str]:
    """Every tolerance the metrics miss, as readable lines; a metric that does not apply is not checked."""
    failed = []
    values = dict(metrics)
    if metrics.get("accuracy") is not None and metrics.get("fp32_accuracy") is not None:
        values["accuracy_drop"] = float(metrics["fp32_accuracy"]) - float(metrics["accuracy"])  # type: ignore[arg-type]
    for key, limit in tolerances.items():
        metric, op = TOLERANCE_KEYS[key]
        v = values.get(metric)
        if v is None:
            continue
        if (op == ">=" and v < limit) or (op == "<=" and v > limit):
            counted = ""
            if metric == "top1_agreement" and metrics.get("top1_counted") is not None:
                counted = f" (on {metrics['top1_counted']} of {metrics.get('top1_decisions')} with a clear fp32 top-1)"
            failed.append(f"{metric} {v:.6g}{counted} misses {key} {limit:g}")
    return failed


def run_artifact(session: Any, samples: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """Run every sample; stack each output over samples -> one (N, *shape) array per output."""
    outs: list[list[np.ndarray]] = []
    for sample in samples:
        result = session.run(tuple(sample))
        for i, o in enumerate(result):
            if len(outs) <= i:
                outs.append([])
            outs[i].append(np.asarray(o))
    return [np.stack(o) for o in outs]


def verify_artifact(
    exporter: Any,
    artifact: ExportedArtifact,
    evaluation: Dataset,
    reference: list[np.ndarray],
    *,
    classifier: bool = False,
    task: str | None = None,
    tolerances: dict[str, float],
    threads: int | None = None,
    expected_io: tuple[list[Any], list[Any]] | None = None,
) -> dict[str, Any]:
    """The manifest's ``verification`` object for one artifact.

    ``expected_io`` (inputs, outputs) is what an app binds to (the model's specs); defaults to the artifact's.

    Which arithmetic is judged: where the exporter can evaluate the artifact as its format defines it,
    independent of this host's fused kernels (``exporter.open_reference``: ONNX int8), the verdict comes from
    that evaluation (``evaluation: "reference"``) and the host runtime's own result is recorded beside it
    (``host_kernel``), with a ``warning`` when the two verdicts differ. A phone runs the artifact on its own
    kernels; an int8 kernel of the packaging machine that saturates (x86 without VNNI, see
    :mod:`mpk.hostcpu`) must not pass or fail it. Elsewhere the host runtime is the evaluation
    (``evaluation: "host"``).
    """
    v: dict[str, Any] = {
        "status": "skipped",
        "passed": None,
        "reason": None,
        "metrics": {},
        "tolerances": tolerances,
        "samples": len(evaluation),
    }
    structural = _structural(exporter, artifact, expected_io or (artifact.inputs, artifact.outputs))
    if structural is not None:
        v["structural"] = structural
    weights = exporter.weight_check(artifact)
    if weights is not None:
        v["weights"] = weights
    try:
        session = exporter.open(artifact.path, threads=threads)
        actual = run_artifact(session, evaluation.samples)
        ref_session = exporter.open_reference(artifact.path, threads=threads)
        exact = run_artifact(ref_session, evaluation.samples) if ref_session is not None else None
    except RuntimeMissing as e:
        v["reason"] = f"needs macOS to run ({e.message})" if sys.platform != "darwin" else str(e.message)
        problems = []
        if structural is not None and not structural.get("ok", False):
            problems.append("structural check failed: " + "; ".join(structural["problems"]))
        if weights is not None and not weights["ok"]:
            problems.append("weight check failed: " + "; ".join(weights["problems"]))
        if problems:
            v.update(status="failed", passed=False, reason="; ".join(problems))
        return v
    except Exception as e:  # a runtime crash on our own artifact is a failed verification, not a crash of mpk
        v.update(status="failed", passed=False, reason=f"host runtime failed: {type(e).__name__}: {e}")
        return v
    judged = exact if exact is not None else actual
    v["evaluation"] = "reference" if exact is not None else "host"
    for got in (actual, judged):
        if len(got) != len(reference) or any(a.shape != r.shape for a, r in zip(got, reference, strict=False)):
            shapes, want = [a.shape for a in got], [r.shape for r in reference]
            v.update(status="failed", passed=False, reason=f"output shapes {shapes} differ from fp32 {want}")
            return v
    v["metrics"] = compute_metrics(reference, judged, classifier=classifier, task=task, labels=evaluation.labels)
    missed = check(v["metrics"], tolerances)
    if exact is not None:
        host_metrics = compute_metrics(reference, actual, classifier=classifier, task=task, labels=evaluation.labels)
        host_missed = check(host_metrics, tolerances)
        v["host_kernel"] = {"metrics": host_metrics, "missed": host_missed, "cpu": _kernel_summary()}
        if bool(host_missed) != bool(missed):
            v["warning"] = _verdicts_differ(host_metrics, host_missed, missed)
    io_inputs = (expected_io or (artifact.inputs,))[0]
    batched = _batched_check(exporter, artifact, ref_session is not None, threads, evaluation, reference, io_inputs)
    if batched is not None:
        v["batched"] = batched
        floor = tolerances.get("min_cosine")
        if batched.get("error") or (floor is not None and batched["cosine"] < floor):
            why = batched.get("error") or f"cosine {batched['cosine']:.6g} misses min_cosine {floor:g}"
            missed.append(f"a batch of {batched['batch']} (the batch dim is dynamic): {why}")
    if structural is not None and not structural.get("ok", False):
        missed.append("structural check: " + "; ".join(structural["problems"]))
    if weights is not None and not weights["ok"]:
        missed.append("weight check: " + "; ".join(weights["problems"]))
    v.update(status="failed" if missed else "passed", passed=not missed, reason="; ".join(missed) or None)
    return v


def _batched_check(
    exporter: Any,
    artifact: ExportedArtifact,
    reference_eval: bool,
    threads: int | None,
    evaluation: Dataset,
    reference: list[np.ndarray],
    inputs: list[Any],
) -> dict[str, Any] | None:
    """When every input's batch dim (axis 0) is dynamic, run one sample, then the first samples as ONE batch, and
    compare each sample's slice with the fp32 reference: an artifact declared ``batch=1..8`` must be right at
    batch > 1, which per-sample evaluation never shows, and must survive the change of batch an app makes. None
    when the batch is not dynamic or there are too few samples.

    The batch is min(4, the declared maximum, samples), compared with :func:`mpk.metrics.compare`. It runs in a
    child process: a runtime that crashes on it (ExecuTorch 1.4.1's XNNPACK static int8 corrupts its heap going
    from batch 1 to batch 4) is the finding, reported as ``error``, not the end of ``mpk package``.
    """
    from mpk.metrics import compare

    if not inputs or not all(s.shape and isinstance(s.shape[0], str) for s in inputs):
        return None
    k = min(4, len(evaluation), *(s.dynamic.get(s.shape[0], (1, 4))[1] for s in inputs))
    if k < 2:
        return None
    samples = evaluation.samples[:k]
    batch = tuple(np.concatenate([s[i] for s in samples], axis=0) for i in range(len(samples[0])))
    outs, error = _run_isolated(exporter, artifact.path, reference_eval, threads, [samples[0], batch])
    if error is not None:
        return {"batch": k, "error": f"{error} (running one sample, then a batch of {k})"}
    try:
        got = [np.stack(np.split(np.asarray(o), k, axis=0)) for o in outs[1]]
        m = compare([r[:k] for r in reference], got, classifier=False)
    except ValueError as e:
        return {"batch": k, "error": f"outputs of a batch of {k} do not split into samples: {e}"}
    return {"batch": k, "cosine": m["cosine"], "max_abs_error": m["max_abs_error"]}


def _run_isolated(
    exporter: Any, path: Any, reference_eval: bool, threads: int | None, feeds: list[tuple[np.ndarray, ...]]
) -> tuple[list[list[np.ndarray]], str | None]:
    """Run ``feeds`` in order on the artifact, in a spawned child; (outputs per feed, None) or ([], what failed)."""
    import multiprocessing
    import pickle
    import signal

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_runs, args=(exporter, str(path), reference_eval, threads, feeds, child))
    try:
        proc.start()
    except (TypeError, AttributeError, pickle.PicklingError):  # an exporter defined in a function: run it here
        child.close()
        try:
            session = exporter.open_reference(path, threads=threads) if reference_eval else None
            session = session or exporter.open(path, threads=threads)
            return [[np.asarray(o) for o in session.run(tuple(f))] for f in feeds], None
        except Exception as e:
            return [], f"{type(e).__name__}: {e}"
    child.close()
    try:
        result = parent.recv() if parent.poll(600) else None
    except EOFError:
        result = None
    proc.join(30)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        code = proc.exitcode
        if code is not None and code < 0:
            return [], f"the runtime crashed ({signal.Signals(-code).name})"
        return [], f"the runtime process ended without a result (exit {code})"
    if isinstance(result, str):
        return [], result
    return result, None


def _child_runs(exporter: Any, path: str, reference_eval: bool, threads: int | None, feeds: list, conn: Any) -> None:
    from pathlib import Path

    try:
        p = Path(path)
        session = exporter.open_reference(p, threads=threads) if reference_eval else None
        session = session or exporter.open(p, threads=threads)
        conn.send([[np.asarray(o) for o in session.run(tuple(f))] for f in feeds])
    except Exception as e:  # the refusal is the finding
        conn.send(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")


def _kernel_summary() -> str:
    from mpk.hostcpu import isa_label

    return isa_label()


def _verdicts_differ(host_metrics: dict[str, Any], host_missed: list[str], missed: list[str]) -> str:
    """One line for a verdict this host's int8 kernels would have given differently."""
    from mpk.hostcpu import int8_kernel, this_cpu

    kernel = int8_kernel(this_cpu())
    cos, top1 = host_metrics.get("cosine"), host_metrics.get("top1_agreement")
    shown = f"cosine {cos:.4f}" + (f", top-1 agreement {top1:.3f}" if top1 is not None else "")
    if host_missed:
        why = (
            f"its int8 kernel ({kernel.name}: {kernel.why}) saturates; ARM64 phones and x86 CPUs with VNNI do not "
            "(mpk package --onnx-reduce-range makes artifacts that CPUs like this one compute exactly)"
            if kernel.saturates
            else "cause unknown: this host's kernel does not saturate"
        )
        return (
            f"this host's runtime gives {shown}, which misses the tolerance ({'; '.join(host_missed)}): {why}. "
            "The verdict comes from the graph's exact arithmetic, which is what those targets compute."
        )
    return (
        f"this host's runtime gives {shown}, within tolerance, but the graph's exact arithmetic misses it "
        f"({'; '.join(missed)}): the verdict is the exact one."
    )


def _structural(exporter: Any, artifact: ExportedArtifact, io: tuple[list[Any], list[Any]]) -> dict[str, Any] | None:
    """CoreML's structural check (spec IO names/shapes) where the exporter module offers one."""
    import importlib

    mod = importlib.import_module(type(exporter).__module__)
    fn = getattr(exporter, "structural_check", None) or getattr(mod, "structural_check", None)
    if fn is None:
        return None
    try:
        res = fn(artifact.path, io[0], io[1])
    except Exception as e:
        return {"ok": False, "problems": [f"{type(e).__name__}: {e}"]}
    return {k: v for k, v in dict(res).items() if k in ("ok", "problems")} | {"ok": bool(res.get("ok"))}
