"""report.json: the machine-readable verdict, self-describing and with every target next to its actual."""

from __future__ import annotations

import json
from typing import Any

from runners.report import ReportWriter

SCHEMA_VERSION = "mpk.report/1"


def report_dict(outcome: Any) -> dict[str, Any]:
    """The report as a dict (also what the Markdown and HTML reports are built from)."""
    r = outcome.results
    devices: dict[str, Any] = {}
    for c in r.get("cells", []):
        key = str(c.get("ran_on") or c.get("device_id"))
        devices.setdefault(
            key,
            {
                "device_id": c.get("device_id"),
                "ran_on": key,
                "emulated": bool(c.get("emulated")),
                "facts": c.get("device"),
            },
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": outcome.verdict,
        "exit_code": outcome.exit_code,
        "summary": outcome.summary,
        "results": {
            "path": str(outcome.results_path) if outcome.results_path else None,
            "run_id": r.get("run_id"),
            "created_utc": r.get("created_utc"),
            "schema_version": r.get("schema_version"),
            "manifest": r.get("manifest"),
        },
        "budgets_file": str(outcome.budgets_path) if outcome.budgets_path else None,
        "config": r.get("config"),
        "environment": r.get("environment"),
        "devices": list(devices.values()),
        "gate": outcome.to_dict(),
        "cells": [
            {
                "device_id": c.get("device_id"),
                "ran_on": c.get("ran_on"),
                "emulated": bool(c.get("emulated")),
                "artifact_id": c.get("artifact_id"),
                "status": c.get("status"),
                "outcome": c.get("outcome"),
                "error": c.get("error"),
                "settings": c.get("settings"),
                "runner": c.get("runner"),
                "stats": (c.get("result") or {}).get("stats"),
                "memory": (c.get("result") or {}).get("memory"),
                "accuracy": (c.get("result") or {}).get("accuracy"),
                "load_ms": (c.get("result") or {}).get("load_ms"),
                "first_inference_ms": (c.get("result") or {}).get("first_inference_ms"),
            }
            for c in r.get("cells", [])
        ],
    }


class JsonReport(ReportWriter):
    filename = "report.json"

    def render(self, outcome: Any) -> str:
        return json.dumps(report_dict(outcome), indent=2, sort_keys=False, default=str) + "\n"
