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
    classifier: bool,
    labels: np.ndarray | None = None,
) -> dict[str, float | None]:
    """:func:`mpk.metrics.compare` plus accuracy against ``labels`` where they exist.

    ``reference``/``actual``: one array per output, leading axis = sample.

    >>> r = [np.array([[[1.0, 0.0]], [[0.0, 1.0]]])]
    >>> compute_metrics(r, r, classifier=True)["top1_agreement"]
    1.0
    """
    m: dict[str, float | None] = {**compare_outputs(reference, actual, classifier=classifier),
                                  "accuracy": None, "fp32_accuracy": None}  # fmt: skip
    if classifier and labels is not None:
        n = len(reference[0])
        ref_top = reference[0].reshape(n, -1).argmax(axis=1)
        got_top = actual[0].reshape(n, -1).argmax(axis=1)
        m["accuracy"] = float(np.mean(got_top == labels[:n]))
        m["fp32_accuracy"] = float(np.mean(ref_top == labels[:n]))
    return m


def check(metrics: dict[str, float | None], tolerances: dict[str, float]) -> list[str]:
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
            failed.append(f"{metric} {v:.6g} misses {key} {limit:g}")
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
    classifier: bool,
    tolerances: dict[str, float],
    threads: int | None = None,
    expected_io: tuple[list[Any], list[Any]] | None = None,
) -> dict[str, Any]:
    """The manifest's ``verification`` object for one artifact.

    ``expected_io`` (inputs, outputs) is what an app binds to (the model's specs); defaults to the artifact's.
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
    try:
        session = exporter.open(artifact.path, threads=threads)
        actual = run_artifact(session, evaluation.samples)
    except RuntimeMissing as e:
        v["reason"] = f"needs macOS to run ({e.message})" if sys.platform != "darwin" else str(e.message)
        if structural is not None and not structural.get("ok", False):
            v.update(
                status="failed", passed=False, reason="structural check failed: " + "; ".join(structural["problems"])
            )
        return v
    except Exception as e:  # a runtime crash on our own artifact is a failed verification, not a crash of mpk
        v.update(status="failed", passed=False, reason=f"host runtime failed: {type(e).__name__}: {e}")
        return v
    if len(actual) != len(reference) or any(a.shape != r.shape for a, r in zip(actual, reference, strict=False)):
        got = [a.shape for a in actual]
        want = [r.shape for r in reference]
        v.update(status="failed", passed=False, reason=f"output shapes {got} differ from fp32 {want}")
        return v
    v["metrics"] = compute_metrics(reference, actual, classifier=classifier, labels=evaluation.labels)
    missed = check(v["metrics"], tolerances)
    if structural is not None and not structural.get("ok", False):
        missed.append("structural check: " + "; ".join(structural["problems"]))
    v.update(status="failed" if missed else "passed", passed=not missed, reason="; ".join(missed) or None)
    return v


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
