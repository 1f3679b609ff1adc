"""Schema-valid results documents built from generated samples, for the gate and report tests.

Latencies are drawn from seeded distributions, so every statistic, interval
and p-value is reproducible and golden files need no timing normalisation
beyond what the bench writes (dates, versions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from runners.stats import LatencyStats

PHONE = {
    "model": "Pixel 7",
    "manufacturer": "Google",
    "soc": "Tensor G2",
    "abi": "arm64-v8a",
    "os": "android",
    "os_version": "14",
    "cores": 8,
    "governor": "schedutil",
    "cpu_max_freq_khz": None,
    "host_cpu": None,
}
HOST = {
    "model": "mpk-virtual",
    "manufacturer": "mpk",
    "soc": None,
    "abi": "x86_64",
    "os": "android",
    "os_version": "14",
    "cores": 2,
    "governor": None,
    "cpu_max_freq_khz": None,
    "host_cpu": "Test CPU @ 2.0GHz",
}
SETTINGS = {
    "threads": 4,
    "cpu_affinity": None,
    "warmup_iterations": 5,
    "min_iterations": 50,
    "min_seconds": 0.0,
    "max_seconds": None,
}


def samples(median: float, n: int, seed: int, spread: float = 0.05) -> list[float]:
    """Lognormal latencies (long right tail like real ones), rounded to microseconds."""
    rng = np.random.default_rng(seed)
    return [round(float(v), 3) for v in median * rng.lognormal(0.0, spread, size=n)]


def artifact_result(
    artifact_id: str,
    lat: list[float],
    *,
    peak_mb: float = 120.0,
    top1: float | None = 1.0,
    cosine: float = 0.999,
    load_ms: float = 42.0,
    error_kind: str | None = None,
) -> dict[str, Any]:
    """An ok runner result over ``lat``, or (``error_kind`` given) one that failed with that typed kind."""
    backend, _, scheme = artifact_id.partition("-")
    if error_kind is not None:
        return {"id": artifact_id, "backend": backend, "scheme": scheme, "status": "error",
                "error": {"kind": error_kind, "message": f"{error_kind} failure"}}  # fmt: skip
    return {
        "id": artifact_id,
        "backend": backend,
        "scheme": scheme,
        "status": "ok",
        "error": None,
        "load_ms": load_ms,
        "first_inference_ms": round(lat[0] * 1.5, 3),
        "warmup_iterations": 5,
        "iterations": len(lat),
        "samples_ms": lat,
        "stats": LatencyStats.from_samples(lat).to_dict(),
        "memory": {
            "baseline_rss_mb": 60.0,
            "peak_rss_mb": peak_mb,
            "rise_mb": peak_mb - 60.0,
            "pss_mb": None,
            "source": "/proc/self/status VmHWM",
        },
        "accuracy": {"samples": 8, "max_abs_error": 0.01, "cosine": cosine, "snr_db": 35.0, "top1_agreement": top1},
    }


#: outcome -> the coarse status a cell with it carries (mpk.contract.Outcome.status)
_STATUS = {"ok": "ok", "failed": "error", "unsupported": "error", "infra_error": "error", "skipped": "skipped",
           "not_applicable": "skipped"}  # fmt: skip


def cell(
    device_id: str,
    artifact_id: str,
    lat: list[float] | None = None,
    *,
    emulated: bool = False,
    ran_on: str | None = None,
    outcome: str = "ok",
    error: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A results cell. ``outcome`` failed/unsupported carry a runner result with that error kind; infra_error,
    skipped and not_applicable carry none (as the bench writes them)."""
    backend, _, scheme = artifact_id.partition("-")
    result: dict[str, Any] | None = None
    if outcome == "ok":
        result = artifact_result(artifact_id, lat or [], **kw)
    elif outcome in ("failed", "unsupported"):
        kind = "unsupported" if outcome == "unsupported" else kw.pop("error_kind", "inference")
        result = artifact_result(artifact_id, [], error_kind=kind)
        if error:  # the bench writes "<kind>: <message>"
            result["error"]["message"] = error.removeprefix(f"{kind}: ")
        error = f"{kind}: {result['error']['message']}"
    unmeasured = outcome in ("skipped", "not_applicable")
    return {
        "device_id": device_id,
        "ran_on": None if unmeasured else (ran_on or ("mpk-virtual" if emulated else device_id)),
        "emulated": emulated,
        "artifact_id": artifact_id,
        "backend": backend,
        "scheme": scheme,
        "status": _STATUS[outcome],
        "outcome": outcome,
        "error": error,
        "device": None if unmeasured else (HOST if emulated else PHONE),
        "settings": dict(SETTINGS),
        "runner": None if unmeasured else {"name": "android_app", "version": "0.1.0"},
        "started_utc": None if unmeasured else "2026-01-01T00:00:00Z",
        "finished_utc": None if unmeasured else "2026-01-01T00:01:00Z",
        "result": result,
    }


def results(
    cells: list[dict[str, Any]],
    *,
    run_id: str = "run-1",
    git: str = "abc1234",
    created: str = "2026-01-01T00:00:00Z",
    manifest_path: str = "../package/manifest.json",
    complete: bool = True,
    matrix: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A results document around ``cells``; its matrix is every device x artifact the cells name (a full run)."""
    devices = list(dict.fromkeys(c["device_id"] for c in cells))
    arts = list(dict.fromkeys(c["artifact_id"] for c in cells))
    return {
        "schema_version": "mpk.results/2",
        "run_id": run_id,
        "created_utc": created,
        "finished_utc": created,
        "complete": complete,
        "manifest": {"path": manifest_path, "sha256": "0" * 64, "model": {"name": "tinynet"}},
        "devices_file": "devices.yaml",
        "config": {"fallback": "none"},
        "environment": {
            "mpk_version": "0.1.0",
            "python": "3.11.0",
            "platform": "Linux-test",
            "git_revision": git,
            "libraries": {"numpy": "2.0.0"},
        },
        "matrix": matrix if matrix is not None else {"devices": devices, "artifacts": arts},
        "cells": cells,
    }


DEVICES_YAML = """\
version: 1
defaults: {warmup_iterations: 5, min_iterations: 50, min_seconds: 0, max_seconds: 60, cooldown_s: 0, threads: 4}
devices:
  - {id: pixel-7, kind: android, serial: ABC123}
  - {id: host, kind: host}
budgets:
"""
