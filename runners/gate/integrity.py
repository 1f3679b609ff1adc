"""Before the gate believes a results file: is it whole, and does it agree with itself?

The schema says each field has the right type; these checks say the fields tell one story.
Every problem names its cell, and any problem refuses the file as a usage error (exit 2): a gate
verdict on a file that contradicts itself (hand-edited, truncated, or from a broken runner) would be
a verdict on nothing. What is checked:

* the cells are the planned matrix (``matrix``: device ids x artifact ids), each exactly once; a file
  that says ``complete: true`` has all of them; the planned artifacts are the manifest's, with the
  same backend and scheme, when the manifest the file names is still there unchanged;
* each cell's ``outcome`` agrees with its ``status`` and with whether it has a runner result, and that
  result is the cell's artifact;
* every latency sample is a finite number >= 0; ``iterations`` equals the number of samples; the
  stored ``stats`` are what :meth:`runners.stats.LatencyStats.from_samples` computes from the samples
  (the gate uses only its own); stored stats without the samples behind them are refused;
* ``emulated`` agrees with ``ran_on`` (a cell that ran on a stand-in is emulated), with the device's
  kind in the file's config (an ``emulator`` device is emulated, the ``host`` is not) and with the
  device facts (mpk's virtual device is always emulated);
* accuracy numbers are in their range (cosine within [-1, 1], top-1 agreement within [0, 1],
  SNR at most :data:`mpk.metrics.SNR_CAP_DB`), times and memory are finite and >= 0.

An incomplete file (``complete: false``) is consistent, but never passes: see :mod:`runners.gate.verdict`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from mpk.contract import VIRTUAL_DEVICE_MODEL, Outcome, Results, read_manifest
from mpk.errors import UsageError
from mpk.metrics import SNR_CAP_DB
from runners.stats import LatencyStats

#: how far a stored statistic may sit from the recomputed one (runners on other platforms round differently)
REL_TOL = 1e-6
ABS_TOL = 1e-9
_EPS = 1e-9


def _finite_nonneg(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def cell_label(i: int, cell: dict[str, Any]) -> str:
    return f"cells[{i}] ({cell.get('device_id')}/{cell.get('artifact_id')})"


def _stats_problems(stored: dict[str, Any], samples: list[float]) -> list[str]:
    fresh = LatencyStats.from_samples(samples).to_dict()
    out = []
    for key, want in fresh.items():
        got = stored.get(key)
        if isinstance(want, list):
            ok = isinstance(got, list) and len(got) == 2 and all(map(_close, map(float, got), want))
        else:
            ok = isinstance(got, int | float) and _close(float(got), float(want))
        if not ok:
            out.append(f"stats.{key} is {got!r} but the samples give {want!r}")
    return out


def _result_problems(cell: dict[str, Any], outcome: Outcome) -> list[str]:
    res = cell["result"]
    out: list[str] = []
    if res is None:
        if outcome.has_result:
            out.append(f"outcome {outcome} needs a runner result, but result is null")
        return out
    if not outcome.has_result:
        out.append(f"outcome {outcome} means nothing was measured, but the cell holds a runner result")
        return out
    for key, cell_key in (("id", "artifact_id"), ("backend", "backend"), ("scheme", "scheme")):
        if res.get(key) != cell.get(cell_key):
            out.append(f"result.{key} {res.get(key)!r} is not the cell's {cell_key} {cell.get(cell_key)!r}")
    kind = (res.get("error") or {}).get("kind")
    want_status = "ok" if outcome is Outcome.OK else "error"
    if res.get("status") != want_status:
        out.append(f"outcome {outcome} but result.status is {res.get('status')!r}")
    elif (outcome is Outcome.UNSUPPORTED) != (kind == "unsupported"):
        out.append(f"outcome {outcome} but result.error.kind is {kind!r}")
    samples = res.get("samples_ms") or []
    bad = [(j, v) for j, v in enumerate(samples) if not _finite_nonneg(v)]
    if bad:
        j, v = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        out.append(f"samples_ms[{j}] is {v!r}{more}: a latency is a finite number >= 0")
        return out  # nothing below can be computed from such samples
    if samples:
        if res.get("iterations") is not None and res["iterations"] != len(samples):
            out.append(f"iterations is {res['iterations']} but samples_ms holds {len(samples)} sample(s)")
        if res.get("stats") is not None:
            out.extend(_stats_problems(res["stats"], samples))
    elif res.get("stats") is not None:
        out.append("stats are given without the samples_ms they summarise; the gate recomputes, it does not believe")
    for key in ("load_ms", "first_inference_ms"):
        if res.get(key) is not None and not _finite_nonneg(res[key]):
            out.append(f"{key} is {res[key]!r}: expected a finite number >= 0")
    for key, v in (res.get("memory") or {}).items():
        if key != "source" and v is not None and not _finite_nonneg(v):
            out.append(f"memory.{key} is {v!r}: expected a finite number >= 0")
    acc = res.get("accuracy") or {}
    ranges = {"cosine": (-1.0, 1.0), "top1_agreement": (0.0, 1.0), "snr_db": (-math.inf, SNR_CAP_DB),
              "max_abs_error": (0.0, math.inf)}  # fmt: skip
    for key, (lo, hi) in ranges.items():
        v = acc.get(key)
        if v is None:
            continue
        if not (isinstance(v, int | float) and math.isfinite(v) and lo - _EPS <= v <= hi + _EPS):
            out.append(f"accuracy.{key} is {v!r}: outside [{lo:g}, {hi:g}]")
    return out


def _emulated_problems(cell: dict[str, Any], kinds: dict[str, str]) -> list[str]:
    if cell.get("ran_on") is None:
        return []  # never ran: nothing measured, nothing to mislabel
    emulated, dev, ran_on = bool(cell.get("emulated")), cell.get("device_id"), cell.get("ran_on")
    out = []
    if ran_on != dev and not emulated:
        out.append(f"ran on {ran_on!r}, standing in for {dev!r}, but says emulated: false")
    kind = kinds.get(str(dev))
    if kind == "emulator" and not emulated:
        out.append(f"{dev!r} is an emulator in the file's config, but the cell says emulated: false")
    if kind == "host" and emulated:
        out.append(f"{dev!r} is this host in the file's config, but the cell says emulated: true")
    facts = cell.get("device") or {}
    if facts.get("model") == VIRTUAL_DEVICE_MODEL and not emulated:
        out.append(f"its device facts are mpk's virtual device ({VIRTUAL_DEVICE_MODEL!r}), but it says emulated: false")
    return out


def manifest_artifacts(results: Results, results_path: Path | None) -> dict[str, dict[str, Any]] | None:
    """The manifest's artifacts by id, when the manifest the results name is there and unchanged."""
    mpath = (results.get("manifest") or {}).get("path")
    if not mpath:
        return None
    candidates = [Path(mpath)]
    if results_path is not None and not Path(mpath).is_absolute():
        candidates.insert(0, results_path.parent / mpath)
    for c in candidates:
        try:
            if hashlib.sha256(c.read_bytes()).hexdigest() != results["manifest"]["sha256"]:
                return None  # rebuilt since the bench: it does not describe these cells
            return {a["id"]: dict(a) for a in read_manifest(c)["artifacts"]}
        except (OSError, UsageError):
            continue
    return None


def problems(results: Results, results_path: Path | None = None) -> list[str]:
    """Every inconsistency of ``results``, each naming the cell; empty when the file tells one story."""
    out: list[str] = []
    cells = results["cells"]
    kinds = {str(d.get("id")): str(d.get("kind")) for d in (results.get("config") or {}).get("devices") or []
             if isinstance(d, dict)}  # fmt: skip
    seen: dict[tuple[str, str], int] = {}
    for i, cell in enumerate(cells):
        where = cell_label(i, cell)
        key = (cell["device_id"], cell["artifact_id"])
        if key in seen:
            out.append(f"{where}: the same device and artifact as cells[{seen[key]}]")
        seen.setdefault(key, i)
        outcome = Outcome(cell["outcome"])
        if cell["status"] != outcome.status:
            out.append(f"{where}: status {cell['status']!r} contradicts outcome {outcome} (status {outcome.status!r})")
        out.extend(f"{where}: {p}" for p in _result_problems(cell, outcome) + _emulated_problems(cell, kinds))
    matrix = results.get("matrix")
    if matrix is not None:
        planned = {(d, a) for d in matrix["devices"] for a in matrix["artifacts"]}
        for i, cell in enumerate(cells):
            if (cell["device_id"], cell["artifact_id"]) not in planned:
                out.append(f"{cell_label(i, cell)}: not in the run's matrix ({len(planned)} planned cells)")
        arts = manifest_artifacts(results, results_path)
        if arts is not None:
            for a in matrix["artifacts"]:
                if a not in arts:
                    out.append(f"matrix.artifacts: {a!r} is not in the manifest {results['manifest']['path']}")
            for i, cell in enumerate(cells):
                m = arts.get(cell["artifact_id"])
                if m is not None and (m["backend"], m["scheme"]) != (cell["backend"], cell["scheme"]):
                    out.append(f"{cell_label(i, cell)}: backend/scheme {cell['backend']}/{cell['scheme']} differ from "
                               f"the manifest's {m['backend']}/{m['scheme']}")  # fmt: skip
    else:  # a version 1 file: the plan is not recorded; every device x artifact seen must be there
        devices, artifacts = {d for d, _ in seen}, {a for _, a in seen}
        planned = {(d, a) for d in devices for a in artifacts}
    missing = sorted(planned - set(seen))
    if results.get("complete") and missing:
        shown = ", ".join(f"{d}/{a}" for d, a in missing[:5]) + (", ..." if len(missing) > 5 else "")
        out.append(f"complete: true, but {len(missing)} planned cell(s) are missing: {shown}")
    return out


def planned_cells(results: Results) -> int:
    """How many cells the run set out to measure (for messages about incomplete runs)."""
    matrix = results.get("matrix")
    if matrix is not None:
        return len(matrix["devices"]) * len(matrix["artifacts"])
    cells = results["cells"]
    return len({c["device_id"] for c in cells}) * len({c["artifact_id"] for c in cells})


def check_integrity(results: Results, results_path: Path | None = None, *, what: str = "results file") -> None:
    """Raise a UsageError (exit 2) listing every inconsistency, each naming its cell."""
    found = problems(results, results_path)
    if not found:
        return
    if len(found) == 1:
        raise UsageError(f"{what} is inconsistent: {found[0]}")
    shown = found[:20] + ([f"... and {len(found) - 20} more"] if len(found) > 20 else [])
    raise UsageError(f"{what} is inconsistent ({len(found)} problems):\n  " + "\n  ".join(shown))
