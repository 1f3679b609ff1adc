"""How long does ``mpk package`` take next to calling the libraries directly, and when cached?

Prints one table. Three measurements in the same run, on the same machine:

1. ``mpk package`` (a subprocess, cold: a fresh cache dir) for int8 on executorch + onnx;
   this includes loading, data, fp32 reference, export, verification and the manifest.
2. The same exports by hand, with no mpk code on the timed path: torch.export + PT2E
   XNNPACKQuantizer + to_edge_transform_and_lower for ExecuTorch; torch.onnx.export (dynamo)
   + onnxruntime quantize_static for ONNX. Same calibration samples.
3. ``mpk package`` again into the same cache (artifacts copied, not re-exported).

The difference between 1 and 2 is what mpk adds (verification over the evaluation set, zstd -19
sizes, manifest); 3 shows what the cache saves. Usage::

    python bench/package_speed.py                  # efficientnet-lite0 (minutes on 2 cores)
    python bench/package_speed.py --model digits-cnn   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _mpk(args: list[str], cache: Path) -> float:
    env = dict(os.environ, MPK_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mpk", *args], env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    # exit 1 = an artifact missed its verification tolerance: everything was still built and written, which
    # is what is being timed. Anything else means the run did not do the work.
    if r.returncode not in (0, 1):
        sys.exit(f"mpk package failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")

    return dt


def _direct_executorch(model, calib, out: Path) -> float:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    t0 = time.perf_counter()
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
    return time.perf_counter() - t0


def _direct_onnx(model, calib, out: Path) -> float:
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = model.inputs[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{name: s[0]} for s in calib.samples])

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    fp32 = out / "direct-fp32.onnx"
    prog = torch.onnx.export(model.module, tuple(model.example_inputs), dynamo=True, input_names=[name], verbose=False)
    prog.save(str(fp32))
    quantize_static(
        str(fp32),
        str(out / "direct-int8.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--calibration-count", type=int, default=32)
    ap.add_argument("--eval-count", type=int, default=96)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpk-bench-"))
    cache = work / "cache"
    args = ["package", "--model", a.model, "--quantize", "int8", "--backends", "executorch,onnx"]
    args += ["--calibration-count", str(a.calibration_count), "--eval-count", str(a.eval_count)]
    args += ["--out", str(work / "pkg")]
    try:
        cold = _mpk(args, cache)
        warm = _mpk(args, cache)

        os.environ["MPK_CACHE_DIR"] = str(cache)  # built-in digits weights are already trained there
        from packager.data import load_dataset
        from packager.models import load_model

        t0 = time.perf_counter()
        model = load_model(a.model)
        calib = load_dataset("builtin", model, count=a.calibration_count, purpose="calibration")
        t_load = time.perf_counter() - t0
        t_et = _direct_executorch(model, calib, work)
        t_onnx = _direct_onnx(model, calib, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    direct = t_load + t_et + t_onnx
    rows = [
        ("mpk package, cold cache (subprocess)", cold, "load+data+export+verify+zstd+manifest"),
        ("direct: load model + calibration data", t_load, "in-process (torch already imported)"),
        ("direct: executorch int8 (PT2E + XNNPACK)", t_et, "no verification"),
        ("direct: onnx int8 (dynamo + quantize_static)", t_onnx, "no verification"),
        ("direct: total", direct, ""),
        ("mpk package, cached re-run (subprocess)", warm, f"{cold / warm:.1f}x faster than cold"),
    ]
    print(f"\nmodel={a.model} int8 executorch+onnx, calibration={a.calibration_count}, eval={a.eval_count}")
    print(f"{'step':<46} {'seconds':>9}  note")
    print("-" * 100)
    for name, sec, note in rows:
        print(f"{name:<46} {sec:9.1f}  {note}")


if __name__ == "__main__":
    main()
