"""The history store on a REAL throwaway PostgreSQL server (Debian's package), and on SQLite.

The server is initdb'd into a fresh directory owned by ``nobody`` (PostgreSQL
refuses to run as root), listens on a private port on 127.0.0.1, and is
stopped at the end.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runners.gate.history import HistoryStore
from runners.stats import LatencyStats
from tests.gate_factory import cell, results, samples

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not PG_BIN or not os.path.exists(f"{PG_BIN[-1]}/initdb"):
        pytest.skip("PostgreSQL server binaries not installed (Debian package 'postgresql')")
    bindir = PG_BIN[-1]
    run_as: list[str] = []
    root = tempfile.mkdtemp(prefix="mpk-pg-")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        run_as = ["runuser", "-u", "nobody", "--"]
    data, port = f"{root}/data", _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            [*run_as, f"{bindir}/initdb", "-D", data, "-U", "mpk", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        opts = f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c shared_buffers=16MB"
        subprocess.run(
            [*run_as, f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", f"{root}/log", "-w", "start"],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        yield f"postgresql://mpk@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            env=env,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def _roundtrip(url: str) -> None:
    with HistoryStore.open(url) as store:
        base = results(
            [
                cell("pixel-7", "onnx-int8", samples(10, 100, 1)),
                cell("pixel-7", "onnx-int8", samples(30, 100, 9), emulated=True),
            ],
            run_id="r1",
            created="2026-01-01T00:00:00Z",
        )
        later = results(
            [cell("pixel-7", "onnx-int8", samples(12, 100, 2))],
            run_id="r2",
            created="2026-01-02T00:00:00Z",
            git="def5678",
        )
        store.record(base, accepted=True)
        store.record(later, accepted=False)
        got = store.baseline("pixel-7", "onnx-int8", emulated=False)
        assert got is not None and got["history"]["run_id"] == "r1"  # r2 was not accepted
        assert got["result"]["samples_ms"] == base["cells"][0]["result"]["samples_ms"]  # raw samples, in order
        assert got["device"]["model"] == "Pixel 7" and got["settings"]["threads"] == 4
        emu = store.baseline("mpk-virtual", "onnx-int8", emulated=True)
        assert emu is not None and emu["emulated"] is True
        assert store.baseline("pixel-7", "onnx-int8", emulated=True) is None  # real and emulated never mix
        trend = store.trend("pixel-7", "onnx-int8", 10, emulated=False)
        assert [(p.run_id, p.accepted, p.git_revision) for p in trend] == [
            ("r1", True, "abc1234"),
            ("r2", False, "def5678"),
        ]
        assert trend[1].p50_ms == LatencyStats.from_samples(later["cells"][0]["result"]["samples_ms"]).p50_ms


@pytest.mark.postgres
def test_postgres_record_baseline_roundtrip(pg_url: str) -> None:
    _roundtrip(pg_url)
    with HistoryStore.open(pg_url) as store:  # reopening an existing schema is fine
        assert store.kind == "postgres" and len(store.trend("pixel-7", "onnx-int8")) == 3


def test_sqlite_same_schema(tmp_path: Path) -> None:
    _roundtrip(f"sqlite:///{tmp_path / 'sub' / 'h.sqlite'}")


def test_bad_url_is_usage_error() -> None:
    from mpk.errors import UsageError

    with pytest.raises(UsageError):
        HistoryStore.open("mysql://x")
