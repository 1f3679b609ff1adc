"""How long does ``mpk package`` take next to calling the libraries directly, and when cached?

Prints one table. Three measurements per repetition, on the same machine, each a fresh process:

1. ``mpk package`` cold (a fresh cache dir, the built-in's weights already trained there) for int8 on
   executorch + onnx: loading, data, fp32 reference, export, bias correction, verification, zstd sizes and
   the manifest. On Linux ExecuTorch's lowering runs in a forked child while ONNX builds (the direct calls
   run one after the other, as a script would); ``--cpu`` counts the child's CPU too.
2. The same exports by hand, with no mpk code on the timed path, in a fresh process of its own
   (``--direct``), so it pays for the interpreter and the imports as ``mpk`` does: torch.export + PT2E
   XNNPACKQuantizer + to_edge_transform_and_lower for ExecuTorch; torch.onnx.export (dynamo) +
   quant_pre_process + onnxruntime quantize_static for ONNX. Same calibration samples.
3. ``mpk package`` again into the same cache (artifacts, verifications and references reused).

The difference between 1 and 2 is what mpk adds (bias correction, verification over the evaluation set,
the fp32 reference, zstd -19 sizes, manifest); 3 shows what the cache saves. On a shared machine
timings move by a quarter between runs: ``--repeat N`` runs everything N times, interleaved, and prints
the median of each row and every repetition's ratio. Usage::

    python bench/package_speed.py                      # efficientnet-lite0 (minutes on 2 cores)
    python bench/package_speed.py --model digits-cnn   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(cache: Path) -> dict[str, str]:
    return dict(os.environ, MPK_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmd: list[str], env: dict[str, str], cpu: bool) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall seconds of the process, or with ``cpu`` its CPU seconds (user + sys, all threads)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    return (_children_cpu() - c0) if cpu else (time.perf_counter() - t0), r


def _mpk(args: list[str], cache: Path, cpu: bool) -> float:
    dt, r = _timed([sys.executable, "-m", "mpk", *args], _env(cache), cpu)
    # exit 1 = an artifact missed its verification tolerance: everything was still built and written, which
    # is what is being timed. Anything else means the run did not do the work.
    if r.returncode not in (0, 1):
        sys.exit(f"mpk package failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return dt


def _direct(a: argparse.Namespace, cache: Path, work: Path) -> tuple[float, dict[str, float]]:
    """The direct calls in a fresh process: (seconds of the whole process, its own step timings)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--direct", str(work), "--model", a.model]
    cmd += ["--calibration-count", str(a.calibration_count)] + (["--cpu"] if a.cpu else [])
    dt, r = _timed(cmd, _env(cache), a.cpu)
    if r.returncode != 0:
        sys.exit(f"direct export failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return dt, json.loads(r.stdout.strip().splitlines()[-1])


# --- the direct calls (run with --direct, in their own process) ---------------------------------------------


def _direct_executorch(model, calib, out: Path, clock) -> float:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    t0 = clock()
    ex = tuple(model.example_inputs)
    with torch.no_grad():
        ep = torch.export.export(model.module, ex)
        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(ep.module(), q)
        for sample in calib.samples:
            prepared(*(torch.from_numpy(a) for a in sample))
        converted = convert_pt2e(prepared)
        ep2 = torch.export.export(converted, ex)
        prog = to_edge_transform_and_lower(ep2, partitioner=[XnnpackPartitioner()]).to_executorch()
    (out / "direct.pte").write_bytes(prog.buffer)
    return clock() - t0


def _direct_onnx(model, calib, out: Path, clock) -> float:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = model.inputs[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: s[0]} for s in calib.samples])

        def get_next(self):
            return next(self.it, None)

    t0 = clock()
    fp32, pre = out / "direct-fp32.onnx", out / "direct-pre.onnx"
    prog = torch.onnx.export(model.module, tuple(model.example_inputs), dynamo=True, input_names=[name], verbose=False)
    prog.save(str(fp32))
    quant_pre_process(str(fp32), str(pre))  # per-channel axes need the inferred shapes, as in mpk
    quantize_static(
        str(pre),
        str(out / "direct-int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return clock() - t0


def direct_main(work: Path, model_name: str, calibration_count: int, clock) -> None:
    """Imports, model + data, the two exports; prints the step timings as one JSON line."""
    t0 = clock()
    import torch  # noqa: F401
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
    from executorch.exir import to_edge_transform_and_lower  # noqa: F401
    from onnxruntime.quantization import quantize_static  # noqa: F401
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e  # noqa: F401

    t_imports = clock() - t0
    sys.path.insert(0, str(ROOT))
    from packager.data import load_dataset
    from packager.models import load_model

    t0 = clock()
    model = load_model(model_name)
    calib = load_dataset("builtin", model, count=calibration_count, purpose="calibration")
    t_load = clock() - t0
    t_et = _direct_executorch(model, calib, work, clock)
    t_onnx = _direct_onnx(model, calib, work, clock)
    print(json.dumps({"imports": t_imports, "load": t_load, "executorch": t_et, "onnx": t_onnx}))


# --- the table ----------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--calibration-count", type=int, default=32)
    ap.add_argument("--eval-count", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=1, help="run everything N times, interleaved; report medians")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="report CPU seconds (user+sys, all threads) instead of wall time: steadier on a shared machine; "
        "with OMP_NUM_THREADS=1 it is close to the work done",
    )
    ap.add_argument("--direct", metavar="WORKDIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.direct:
        direct_main(Path(a.direct), a.model, a.calibration_count, time.process_time if a.cpu else time.perf_counter)
        return

    runs: list[dict[str, float]] = []
    for i in range(a.repeat):
        work = Path(tempfile.mkdtemp(prefix="mpk-bench-"))
        cache = work / "cache"
        args = ["package", "--model", a.model, "--quantize", "int8", "--backends", "executorch,onnx"]
        args += ["--calibration-count", str(a.calibration_count), "--eval-count", str(a.eval_count)]
        args += ["--out", str(work / "pkg")]
        try:
            # the built-in's weights (digits-cnn trains at first use) are made before any clock starts
            prep = f"from packager.models import load_model; load_model({a.model!r})"
            subprocess.run([sys.executable, "-c", prep], env=_env(cache), check=True, capture_output=True)
            direct_first = i % 2 == 1  # alternate, so a machine getting busier does not favour one side
            if direct_first:
                wall, parts = _direct(a, cache, work)
            cold = _mpk(args, cache, a.cpu)
            warm = _mpk(args, cache, a.cpu)
            if not direct_first:
                wall, parts = _direct(a, cache, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        runs.append({"cold": cold, "warm": warm, "direct": wall, **{f"d_{k}": v for k, v in parts.items()}})

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    ratios = [r["cold"] / r["direct"] for r in runs]
    imports = med("direct") - sum(med(f"d_{k}") for k in ("load", "executorch", "onnx"))
    plain = "no verification, no bias correction"
    rows = [
        ("mpk package, cold cache (subprocess)", med("cold"), "load+data+reference+export+bias corr.+verify+zstd"),
        ("direct: interpreter start + imports", imports, "torch, executorch, torchao, onnxruntime"),
        ("direct: load model + calibration data", med("d_load"), "in-process"),
        ("direct: executorch int8 (PT2E + XNNPACK)", med("d_executorch"), plain),
        ("direct: onnx int8 (dynamo + quantize_static)", med("d_onnx"), "with quant_pre_process; " + plain),
        ("direct: total (subprocess)", med("direct"), ""),
        ("mpk cold / direct", statistics.median(ratios), "per run: " + ", ".join(f"{x:.2f}" for x in ratios)),
        ("mpk package, cached re-run (subprocess)", med("warm"), f"{med('cold') / med('warm'):.1f}x faster than cold"),
    ]
    print(f"\nmodel={a.model} int8 executorch+onnx, calibration={a.calibration_count}, eval={a.eval_count}", end="")
    print(f", runs={a.repeat} (medians)" + (", CPU seconds" if a.cpu else ""))
    print(f"{'step':<46} {'seconds':>9}  note")
    print("-" * 100)
    for name, sec, note in rows:
        value = f"{sec:8.2f}x" if name.startswith("mpk cold /") else f"{sec:9.1f}"
        print(f"{name:<46} {value}  {note}")


if __name__ == "__main__":
    main()
