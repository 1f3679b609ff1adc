"""The conformance table: every corpus model x backend x scheme, packaged as an app team would, with a reason per miss.

Each model of ``tests/conformance/corpus.py`` is packaged by ``mpk package`` in its own process (a factory file plus
calibration and evaluation ``.npz``), and its manifest is read back. A cell is:

* ``ok``: the artifact verified against fp32 PyTorch (CoreML off macOS: built and structure-checked, ``built``);
* ``miss``: it was written but missed a tolerance; the reason names the metric;
* ``error``: it could not be exported; the reason names the operator and the layer where mpk could find them.

A run that prints a Python traceback, or that mpk itself did not end (``--timeout``), is a failure of mpk, not of
the model, and the table says so. Usage::

    python bench/conformance.py                          # the whole corpus, executorch,onnx,coreml x none,int8
    python bench/conformance.py --fast --backends executorch,onnx
    python bench/conformance.py --models bert,llama --json out.json

Timings depend on the machine; the table's verdicts do not (ONNX int8 is judged on its graph's exact arithmetic).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conformance.corpus import BY_NAME, CORPUS, Entry, package_args, write_data  # noqa: E402

SCHEME_NAMES = {"none": "fp32"}


@dataclass
class Cell:
    model: str
    family: str
    backend: str
    scheme: str
    status: str  # ok | built | miss | error
    reason: str = ""
    cosine: float | None = None
    top1: float | None = None
    top1_counted: str = ""
    fallback: str = ""


@dataclass
class Run:
    model: str
    exit_code: int
    seconds: float
    traceback: bool
    cells: list[Cell]
    note: str = ""


def run_entry(
    entry: Entry, work: Path, backends: str, schemes: str | None, timeout: float, cal: int, ev: int, fallback: str
) -> Run:
    data = write_data(entry, work / entry.name / "data", calibration=cal, evaluation=ev)
    out = work / entry.name / "pkg"
    args = package_args(entry, data, out, backends=backends, schemes=schemes, float_fallback=fallback)
    cmd = [sys.executable, "-m", "mpk", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:  # its captured output comes back as bytes, text=True or not
        code = -1
        text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
    seconds = time.perf_counter() - t0
    (work / entry.name / "log.txt").write_text(text)
    wanted = [
        (b, SCHEME_NAMES.get(s, s))
        for b in backends.split(",")
        for s in (schemes or ",".join(entry.schemes)).split(",")
    ]
    cells = _cells(entry, out / "manifest.json", wanted, code, text)
    note = "" if code >= 0 else f"mpk did not end within {timeout:.0f} s"
    if code < 0:
        done = [ln.lstrip("✓ ").strip() for ln in text.splitlines() if ln.startswith("✓")]
        for cell in cells:
            cell.reason = note + (f" (last step finished: {done[-1]})" if done else "")
    return Run(entry.name, code, seconds, "Traceback (most recent call last)" in text, cells, note)


def _cells(entry: Entry, manifest_path: Path, wanted: list[tuple[str, str]], code: int, text: str) -> list[Cell]:
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() and code >= 0 else None
    cells = []
    for backend, scheme in wanted:
        cell = Cell(entry.name, entry.family, backend, scheme, "error")
        if manifest is None:
            last = [ln for ln in text.strip().splitlines() if ln.startswith("error")][-1:] or text.strip().splitlines()[
                -1:
            ]
            cell.reason = "no manifest: " + (last[0][:300] if last else f"exit {code}")
            cells.append(cell)
            continue
        art = next((a for a in manifest["artifacts"] if a["backend"] == backend and a["scheme"] == scheme), None)
        fail = next((f for f in manifest["failures"] if f["backend"] == backend and f["scheme"] == scheme), None)
        if art is None:
            cell.reason = fail["error"] if fail else "not produced"
            cells.append(cell)
            continue
        v = art["verification"]
        m = v.get("metrics") or {}
        cell.cosine, cell.top1 = m.get("cosine"), m.get("top1_agreement")
        if m.get("top1_counted") is not None:
            cell.top1_counted = f"{m['top1_counted']}/{m.get('top1_decisions') or v['samples']}"
        fb = (art.get("details") or {}).get("float_fallback")
        if fb and fb.get("layers"):
            cell.fallback = f"{len(fb['layers'])} layers in float (+{fb.get('size_cost_bytes', 0) / 1e3:.0f} kB)"
            if not fb.get("met_tolerance") and fb.get("stopped"):
                cell.fallback += f", search stopped: {fb['stopped']}"
        if v["status"] == "passed":
            cell.status = "ok"
        elif v["status"] == "skipped":
            cell.status = "built"
            cell.reason = v.get("reason") or ""
        else:
            cell.status = "miss"
            cell.reason = v.get("reason") or ""
        cells.append(cell)
    return cells


def table(runs: list[Run]) -> str:
    lines = [
        "| model | family | backend | scheme | result | cosine | top-1 (counted) | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for c in r.cells:
            cos = f"{c.cosine:.4f}" if c.cosine is not None else "-"
            top = f"{c.top1:.3f} ({c.top1_counted})" if c.top1 is not None else "-"
            reason = "; ".join(x for x in (c.fallback, c.reason.replace("|", "/")) if x)
            lines.append(
                f"| {c.model} | {c.family} | {c.backend} | {c.scheme} | {c.status} | {cos} | {top} | {reason} |"
            )
    return "\n".join(lines)


def summary(runs: list[Run]) -> list[str]:
    cells = [c for r in runs for c in r.cells]
    out = []
    for backend in sorted({c.backend for c in cells}):
        for scheme in sorted({c.scheme for c in cells if c.backend == backend}):
            these = [c for c in cells if c.backend == backend and c.scheme == scheme]
            good = sum(c.status in ("ok", "built") for c in these)
            out.append(f"{backend} {scheme}: {good}/{len(these)} {'built' if backend == 'coreml' else 'verify'}")
    et_onnx_int8 = [c for c in cells if c.backend in ("executorch", "onnx") and c.scheme.startswith("int8")]
    if et_onnx_int8:
        ok = sum(c.status == "ok" for c in et_onnx_int8)
        out.append(f"ExecuTorch + ONNX int8: {ok}/{len(et_onnx_int8)} ({100 * ok / len(et_onnx_int8):.0f}%)")
    tb = [r.model for r in runs if r.traceback]
    out.append("tracebacks: " + (", ".join(tb) if tb else "none"))
    hung = [r.model for r in runs if r.exit_code < 0]
    if hung:
        out.append("did not end: " + ", ".join(hung))
    out.append("exit codes: " + ", ".join(f"{r.model} {r.exit_code} ({r.seconds:.0f}s)" for r in runs))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma list of corpus names (default: all)")
    ap.add_argument("--fast", action="store_true", help="only the CI subset")
    ap.add_argument("--backends", default="executorch,onnx,coreml")
    ap.add_argument("--quantize", help="comma list of schemes (default: each entry's, none,int8)")
    ap.add_argument("--calibration-count", type=int, default=32)
    ap.add_argument("--eval-count", type=int, default=48)
    ap.add_argument("--float-fallback", default="auto", choices=["auto", "off"], help="passed to mpk package")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per model before mpk counts as hung")
    ap.add_argument("--work", type=Path, help="keep data, packages and logs here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the cells as JSON")
    args = ap.parse_args(argv)
    entries = (
        [BY_NAME[n] for n in args.models.split(",")] if args.models else [e for e in CORPUS if e.fast or not args.fast]
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="mpk-conformance-"))
    runs = []
    for entry in entries:
        run = run_entry(
            entry, work, args.backends, args.quantize, args.timeout, args.calibration_count, args.eval_count,
            args.float_fallback,
        )  # fmt: skip
        runs.append(run)
        print(f"{entry.name}: exit {run.exit_code} in {run.seconds:.0f} s", file=sys.stderr, flush=True)
    print(table(runs))
    print()
    for line in summary(runs):
        print(line)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    print(f"work folder: {work}", file=sys.stderr)
    return 1 if any(r.traceback or r.exit_code < 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
