"""Real hardware: a phone attached to this machine's adb server. Skipped unless asked for::

    MPK_DEVICE_SERIAL=$(adb get-serialno) pytest -m device tests/device

The benchmark test also needs the org.mpk.bench app installed (android_app/README.md). Nothing here is
mocked: these are the checks a lab runs before trusting mpk's numbers from a new phone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runners.config import parse_devices
from runners.transport import open_transport

SERIAL = os.environ.get("MPK_DEVICE_SERIAL")
pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(not SERIAL, reason="set MPK_DEVICE_SERIAL to a phone's adb serial to run device tests"),
]


def test_push_pull_round_trip_is_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    with open_transport("adb_server", SERIAL) as t:
        assert t.shell("mkdir -p /data/local/tmp/mpk/devtest").exit_code == 0
        t.push(src, "/data/local/tmp/mpk/devtest/blob.bin")
        assert t.push(src, "/data/local/tmp/mpk/devtest/blob.bin") is False  # identical: not sent again
        back = tmp_path / "back.bin"
        t.pull("/data/local/tmp/mpk/devtest/blob.bin", back)
        assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
        assert t.getprop().get("ro.product.model")


def test_benchmark_app_runs_a_tiny_package_on_the_phone(tmp_path: Path) -> None:
    from runners.matrix import run_matrix
    from tests.integration.bench_helpers import tiny_package

    with open_transport("adb_server", SERIAL) as t:
        if "org.mpk.bench" not in t.shell("pm list packages org.mpk.bench").stdout:
            pytest.skip("org.mpk.bench is not installed: mpk apps build android && adb install -r <apk>")
    cfg = parse_devices(
        {
            "version": 1,
            "defaults": {"warmup_iterations": 2, "min_iterations": 10, "min_seconds": 0.5},
            "devices": [{"id": "phone", "kind": "android", "serial": SERIAL, "transport": "adb_server"}],
        },
        "devices.yaml",
    )
    doc = run_matrix(tiny_package(tmp_path / "pkg"), cfg, tmp_path / "out", fallback="none")
    cells = [c for c in doc["cells"] if c["backend"] in ("executorch", "onnx")]
    assert cells and all(c["status"] == "ok" for c in cells), [c["error"] for c in cells]
    for c in cells:
        assert c["emulated"] is False and c["ran_on"] == "phone"
        assert len(c["result"]["samples_ms"]) >= 10
        assert c["result"]["memory"]["pss_mb"] is not None  # Android adds PSS
