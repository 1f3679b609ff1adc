"""History: every bench run, with device facts and raw samples, in SQLite or PostgreSQL.

``HistoryStore.open("sqlite:///.mpk/history.sqlite")`` (the default, stdlib
sqlite3, nothing to install) or ``HistoryStore.open("postgresql://user@host/db")``
(psycopg 3, for a CI fleet sharing one store). Both hold the same three tables:

* ``runs``    one row per results file: run id, date, git revision, model, accepted;
* ``cells``   one row per device x artifact: who ran it, real or emulated, device
              facts and settings as JSON, p50/p90/p99, peak memory, the whole cell;
* ``samples`` the raw per-iteration latencies, one row each, so any statistic
              can be recomputed later and regressions use the real distribution.

``accepted`` marks runs that may serve as a baseline. ``mpk gate --history``
records every run and accepts it when the gate passed (``--accept`` accepts a
failing run on purpose, e.g. to adopt a deliberate slowdown; ``--no-accept``
never accepts). A baseline is the last accepted run's cell for the same device
(``ran_on``), the same real/emulated kind and the same artifact.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mpk.errors import InfraError, UsageError

DEFAULT_DB = ".mpk/history.sqlite"
ENV_DB = "MPK_HISTORY_DB"


def default_url(project_dir: Path | None = None) -> str:
    """``$MPK_HISTORY_DB``, else ``sqlite:///<project>/.mpk/history.sqlite``."""
    env = os.environ.get(ENV_DB)
    if env:
        return env
    return f"sqlite:///{(project_dir or Path.cwd()) / DEFAULT_DB}"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id {pk},
    run_id TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    recorded_utc TEXT NOT NULL,
    git_revision TEXT,
    model TEXT,
    mpk_version TEXT,
    accepted {bool} NOT NULL,
    config_json TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    id {pk},
    run_pk BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    ran_on TEXT NOT NULL,
    emulated {bool} NOT NULL,
    artifact_id TEXT NOT NULL,
    backend TEXT,
    scheme TEXT,
    status TEXT NOT NULL,
    p50_ms DOUBLE PRECISION,
    p90_ms DOUBLE PRECISION,
    p99_ms DOUBLE PRECISION,
    peak_mem_mb DOUBLE PRECISION,
    device_json TEXT,
    settings_json TEXT,
    cell_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    cell_pk BIGINT NOT NULL REFERENCES cells(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    value_ms DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (cell_pk, idx)
);
CREATE INDEX IF NOT EXISTS cells_lookup ON cells (ran_on, artifact_id, emulated);
CREATE INDEX IF NOT EXISTS cells_device ON cells (device_id, artifact_id);
"""


@dataclass(frozen=True)
class TrendPoint:
    """One run of one device x artifact, as ``mpk history`` prints it."""

    run_id: str
    created_utc: str
    git_revision: str | None
    p50_ms: float | None
    p90_ms: float | None
    peak_mem_mb: float | None
    accepted: bool
    emulated: bool
    ran_on: str
    samples_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HistoryStore:
    """One connection to a history database. Use :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, conn: Any, *, kind: str, url: str) -> None:
        self._conn = conn
        self.kind = kind
        self.url = url
        self._create()

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None) -> HistoryStore:
        """``sqlite:///relative/or/absolute.sqlite`` (``sqlite:////abs`` also works) or ``postgresql://...``."""
        url = url or default_url()
        if url.startswith("sqlite://"):
            if not url.startswith("sqlite:///") or url == "sqlite:///":
                raise UsageError(f"bad history URL {url!r}; expected sqlite:///path/to/history.sqlite")
            # sqlite:///rel.sqlite is relative to the current directory, sqlite:////abs.sqlite absolute
            path = Path(url.removeprefix("sqlite:///"))
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(path))
            except (OSError, sqlite3.Error) as e:
                raise InfraError(f"cannot open history database {path}: {e}") from e
            conn.execute("PRAGMA foreign_keys = ON")
            return cls(conn, kind="sqlite", url=url)
        if url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError as e:
                raise UsageError(
                    "a postgresql:// history needs psycopg 3", hint="pip install 'psycopg[binary]>=3.2'"
                ) from e
            try:
                conn = psycopg.connect(url, autocommit=False)
            except psycopg.Error as e:
                raise InfraError(f"cannot connect to history database {url}: {e}") from e
            return cls(conn, kind="postgres", url=url)
        raise UsageError(f"bad history URL {url!r}; expected sqlite:///PATH or postgresql://...")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- SQL dialect glue ------------------------------------------------------------------

    def _sql(self, q: str) -> str:
        return q.replace("?", "%s") if self.kind == "postgres" else q

    def _create(self) -> None:
        if self.kind == "postgres":
            ddl = _SCHEMA.format(pk="BIGSERIAL PRIMARY KEY", bool="BOOLEAN")
        else:
            ddl = _SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", bool="INTEGER")
        cur = self._conn.cursor()
        for stmt in (s.strip() for s in ddl.split(";")):
            if stmt:
                cur.execute(stmt)
        self._conn.commit()

    def _bool(self, v: bool) -> Any:
        return bool(v) if self.kind == "postgres" else int(bool(v))

    # ---- writing ---------------------------------------------------------------------------

    def record(self, results: dict[str, Any], accepted: bool) -> int:
        """Store one results file (every cell, with raw samples). Returns the run's key."""
        from runners.gate.verdict import cell_stats, model_name

        env = results.get("environment") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cur = self._conn.cursor()
        try:
            cur.execute(
                self._sql(
                    "INSERT INTO runs (run_id, created_utc, recorded_utc, git_revision, model, mpk_version, accepted,"
                    " config_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                (
                    str(results.get("run_id") or "unknown"),
                    str(results.get("created_utc") or now),
                    now,
                    env.get("git_revision"),
                    model_name(results),
                    env.get("mpk_version"),
                    self._bool(accepted),
                    json.dumps(results.get("config") or {}, sort_keys=True),
                ),
            )
            run_pk = int(cur.fetchone()[0])
            for cell in results.get("cells", []):
                res = cell.get("result") or {}
                stats = cell_stats(cell) if cell["outcome"] == "ok" else None
                cur.execute(
                    self._sql(
                        "INSERT INTO cells (run_pk, device_id, ran_on, emulated, artifact_id, backend, scheme, status,"
                        " p50_ms, p90_ms, p99_ms, peak_mem_mb, device_json, settings_json, cell_json)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                    ),
                    (
                        run_pk,
                        str(cell.get("device_id")),
                        str(cell.get("ran_on") or cell.get("device_id")),
                        self._bool(bool(cell.get("emulated"))),
                        str(cell.get("artifact_id")),
                        cell.get("backend"),
                        cell.get("scheme"),
                        str(cell.get("status")),
                        stats.p50_ms if stats else None,
                        stats.p90_ms if stats else None,
                        stats.p99_ms if stats else None,
                        (res.get("memory") or {}).get("peak_rss_mb"),
                        json.dumps(cell.get("device") or {}, sort_keys=True),
                        json.dumps(cell.get("settings") or {}, sort_keys=True),
                        # samples live in their own table; keep the cell JSON without the big list
                        json.dumps(_without_samples(cell), sort_keys=True),
                    ),
                )
                cell_pk = int(cur.fetchone()[0])
                samples = [(cell_pk, i, float(v)) for i, v in enumerate(res.get("samples_ms") or [])]
                if samples:
                    cur.executemany(self._sql("INSERT INTO samples (cell_pk, idx, value_ms) VALUES (?, ?, ?)"), samples)
            self._conn.commit()
        except Exception:
            self._conn.rollback()
            raise
        return run_pk

    def set_accepted(self, run_pk: int, accepted: bool) -> None:
        self._conn.cursor().execute(
            self._sql("UPDATE runs SET accepted = ? WHERE id = ?"), (self._bool(accepted), run_pk)
        )
        self._conn.commit()

    # ---- reading ---------------------------------------------------------------------------

    def _samples(self, cell_pk: int) -> list[float]:
        cur = self._conn.cursor()
        cur.execute(self._sql("SELECT value_ms FROM samples WHERE cell_pk = ? ORDER BY idx"), (cell_pk,))
        return [float(r[0]) for r in cur.fetchall()]

    def baseline(self, device: str, artifact: str, emulated: bool) -> dict[str, Any] | None:
        """The cell of the last accepted run on ``device`` (the device that really ran it) for ``artifact``.

        Real and emulated never mix: ``emulated`` must match. The cell comes back
        as it was recorded, raw samples included, ready for the regression test.
        """
        cur = self._conn.cursor()
        cur.execute(
            self._sql(
                "SELECT c.id, c.cell_json, r.run_id, r.created_utc FROM cells c JOIN runs r ON r.id = c.run_pk"
                " WHERE c.ran_on = ? AND c.artifact_id = ? AND c.emulated = ? AND r.accepted = ? AND c.status = 'ok'"
                " ORDER BY r.created_utc DESC, r.id DESC LIMIT 1"
            ),
            (device, artifact, self._bool(emulated), self._bool(True)),
        )
        row = cur.fetchone()
        if row is None:
            return None
        cell = json.loads(row[1])
        cell.setdefault("result", {})
        if cell["result"] is None:
            cell["result"] = {}
        cell["result"]["samples_ms"] = self._samples(int(row[0]))
        cell["history"] = {"run_id": row[2], "created_utc": row[3]}
        return cell

    def trend(self, device: str, artifact: str, limit: int = 20, *, emulated: bool | None = None) -> list[TrendPoint]:
        """Newest ``limit`` runs of ``artifact`` on ``device`` (matched as listed or as really run), oldest first."""
        q = (
            "SELECT c.id, r.run_id, r.created_utc, r.git_revision, c.p50_ms, c.p90_ms, c.peak_mem_mb, r.accepted,"
            " c.emulated, c.ran_on FROM cells c JOIN runs r ON r.id = c.run_pk"
            " WHERE (c.device_id = ? OR c.ran_on = ?) AND c.artifact_id = ? AND c.status = 'ok'"
        )
        args: list[Any] = [device, device, artifact]
        if emulated is not None:
            q += " AND c.emulated = ?"
            args.append(self._bool(emulated))
        q += " ORDER BY r.created_utc DESC, r.id DESC LIMIT ?"
        args.append(int(limit))
        cur = self._conn.cursor()
        cur.execute(self._sql(q), tuple(args))
        rows = cur.fetchall()
        points = [
            TrendPoint(
                run_id=r[1],
                created_utc=r[2],
                git_revision=r[3],
                p50_ms=r[4],
                p90_ms=r[5],
                peak_mem_mb=r[6],
                accepted=bool(r[7]),
                emulated=bool(r[8]),
                ran_on=r[9],
                samples_ms=self._samples(int(r[0])),
            )
            for r in rows
        ]
        return points[::-1]

    def lookup(self) -> Callable[[dict[str, Any]], tuple[dict[str, Any], str] | None]:
        """A baseline lookup for :func:`runners.gate.regression.check_regressions`."""

        def find(cell: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
            ran_on = str(cell.get("ran_on") or cell.get("device_id"))
            hit = self.baseline(ran_on, str(cell.get("artifact_id")), bool(cell.get("emulated")))
            if hit is None:
                return None
            h = hit.get("history") or {}
            return hit, f"history run {h.get('run_id')} ({h.get('created_utc')})"

        return find


def _without_samples(cell: dict[str, Any]) -> dict[str, Any]:
    c = dict(cell)
    if isinstance(c.get("result"), dict):
        c["result"] = {k: v for k, v in c["result"].items() if k != "samples_ms"}
    return c
