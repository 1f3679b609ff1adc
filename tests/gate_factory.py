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
) -> dict[str, Any]:
    backend, _, scheme = artifact_id.partition("-")
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


def cell(
    device_id: str,
    artifact_id: str,
    lat: list[float] | None = None,
    *,
    emulated: bool = False,
    ran_on: str | None = None,
    status: str = "ok",
    error: str | None = None,
    result: dict[str, Any] | bool | None = True,
    **kw: Any,
) -> dict[str, Any]:
    backend, _, scheme = artifact_id.partition("-")
    if result is True:
        result = artifact_result(artifact_id, lat or [], **kw) if status == "ok" else None
    return {
        "device_id": device_id,
        "ran_on": ran_on or ("mpk-virtual" if emulated else device_id),
        "emulated": emulated,
        "artifact_id": artifact_id,
        "backend": backend,
        "scheme": scheme,
        "status": status,
        "error": error,
        "device": HOST if emulated else PHONE,
        "settings": dict(SETTINGS),
        "runner": {"name": "android_app", "version": "0.1.0"},
        "started_utc": "2026-01-01T00:00:00Z",
        "finished_utc": "2026-01-01T00:01:00Z",
        "result": result,
    }


def results(
    cells: list[dict[str, Any]],
    *,
    run_id: str = "run-1",
    git: str = "abc1234",
    created: str = "2026-01-01T00:00:00Z",
    manifest_path: str = "../package/manifest.json",
) -> dict[str, Any]:
    return {
        "schema_version": "mpk.results/1",
        "run_id": run_id,
        "created_utc": created,
        "finished_utc": created,
        "complete": True,
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
