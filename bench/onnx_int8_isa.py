"""ONNX int8 on different CPUs: the graph's exact arithmetic against what each CPU's int8 kernel computes.

For each ONNX Runtime int8 configuration, EfficientNet-Lite0 is quantized the way ``mpk package`` does
(``quantize_static`` QDQ, per-channel, MinMax on 32 calibration views, then mpk's bias correction) and compared
with fp32 PyTorch on the 96 evaluation views and the 204 held-out views (17 skimage photos no calibration or
tolerance ever saw), evaluated three ways:

* ``reference``: the QDQ graph as written (packager/export/onnx_reference.py): what ARM64 phones and VNNI x86
  CPUs compute. This is what ``mpk package`` verifies.
* ``this CPU``: ONNX Runtime as it runs here, with its fused int8 kernels.
* ``AVX2 (qemu)``: the same, in a child process under ``qemu-x86_64 -cpu Haswell`` (``--emulate Haswell``,
  the default on x86-64 when qemu-user is installed): ONNX Runtime reads CPUID, sees a Haswell and picks its
  AVX2 kernels, whose ``vpmaddubsw`` adds byte products in pairs into a saturating int16. The child also
  evaluates the reference on the evaluation views, to show it does not move with the CPU (``max |diff|``).

Configurations (``--configs``): ``u8s8`` (mpk's default: uint8 activations, int8 weights, full range),
``u8s8-rr`` (``reduce_range``, mpk's ``--onnx-reduce-range``: 7-bit weights, which cannot saturate a 16-bit
pair: 2 x 255 x 64 < 32767), ``s8s8`` (ORT's documented default), ``u8u8`` (uint8 weights; ORT's docs name it
as free of saturation). ``p50 ms`` is this CPU's ONNX Runtime, 1 thread, the configs' runs interleaved.

Usage::

    python bench/onnx_int8_isa.py                       # ~15 min on 2 cores, most of it under qemu
    python bench/onnx_int8_isa.py --emulate none        # this CPU only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "u8s8": {"activation_type": "QUInt8", "weight_type": "QInt8"},
    "u8s8-rr": {"activation_type": "QUInt8", "weight_type": "QInt8", "reduce_range": True},
    "s8s8": {"activation_type": "QInt8", "weight_type": "QInt8"},
    "u8u8": {"activation_type": "QUInt8", "weight_type": "QUInt8"},
}


def _run(path: str, xs: np.ndarray, reference: bool) -> np.ndarray:
    from packager.export.onnx import OnnxExporter, OnnxSession

    sess = OnnxExporter().open_reference(Path(path), threads=1) if reference else OnnxSession(Path(path), threads=1)
    return np.concatenate([np.asarray(sess.run((xs[i : i + 1],))[0]) for i in range(len(xs))])


def child(job: str) -> None:
    """Runs under qemu: evaluate the artifacts named in ``job`` (a .json) on its inputs; write outputs to .npz."""
    from mpk.hostcpu import isa_label

    spec = json.loads(Path(job).read_text())
    data = np.load(spec["inputs"])
    out: dict[str, np.ndarray] = {}
    for name, path in spec["artifacts"].items():
        for key in ("eval", "held"):
            out[f"{name}/{key}/host"] = _run(path, data[key], reference=False)
        out[f"{name}/eval/reference"] = _run(path, data["eval"], reference=True)
    np.savez(spec["outputs"], **out)
    Path(spec["outputs"] + ".cpu").write_text(isa_label())


def _quantize(model, fp32: Path, pre: Path, cal, name: str, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from packager.export.bias_correction import correct_biases
    from packager.export.onnx import _feeds, _Reader

    names = [s.name for s in model.inputs]
    kw = {k: getattr(QuantType, v) if k.endswith("_type") else v for k, v in CONFIGS[name].items()}
    plain = out / f"{name}.plain.onnx"
    quantize_static(str(pre), str(plain), _Reader(names, cal), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, **kw)  # fmt: skip
    corrected, report = correct_biases(onnx.load(str(fp32)), onnx.load(str(plain)), _feeds(names, cal))
    dst = out / f"{name}.onnx"
    onnx.save(corrected, str(dst))
    before, after = report.get("output_cosine_before"), report.get("output_cosine_after")
    print(f"  {name}: bias correction applied={report['applied']} (calibration cosine {before} -> {after})")
    return dst


def _metrics(ref: np.ndarray, got: np.ndarray) -> tuple[int, float]:
    from mpk.metrics import compare

    m = compare([ref], [got], classifier=True)
    return round(m["top1_agreement"] * len(ref)), m["cosine"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    can_emulate = platform.machine() in ("x86_64", "AMD64") and shutil.which("qemu-x86_64") is not None
    p.add_argument("--emulate", default="Haswell" if can_emulate else "none", help="qemu CPU model, or none")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child)
        return

    import torch

    from mpk.hostcpu import isa_label
    from packager.data import load_dataset
    from packager.data.builtin import HELD_OUT_PHOTOS, photo_views
    from packager.export.onnx import OnnxExporter, _preprocess
    from packager.models import load_model
    from packager.models.loaders import example_shape

    names = [c for c in a.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        sys.exit(f"error: unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")
    model = load_model("efficientnet-lite0")
    cal = load_dataset("builtin", model, count=32, purpose="calibration", seed=0, preprocess=None)
    ev = load_dataset("builtin", model, count=None, purpose="evaluation", seed=1, preprocess=None)
    held = photo_views(HELD_OUT_PHOTOS, example_shape(model.inputs[0]), model.preprocess, None, "evaluation")
    xs = {"eval": np.concatenate([s[0] for s in ev.samples]), "held": np.concatenate([s[0] for s in held.samples])}
    with torch.no_grad():
        refs = {k: np.concatenate([model.module(torch.from_numpy(x[i : i + 1])).numpy() for i in range(len(x))])
                for k, x in xs.items()}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        fp32 = out / "m.fp32.onnx"
        OnnxExporter()._to_onnx(model, fp32)
        pre = _preprocess(fp32, False)
        print("quantizing (ORT quantize_static + mpk bias correction, 32 calibration views)")
        arts = {n: _quantize(model, fp32, pre, cal, n, out) for n in names}
        latency = _latency(arts, xs["eval"][:1])
        results: dict[str, np.ndarray] = {}
        for n, path in arts.items():
            for key in xs:
                results[f"{n}/{key}/host"] = _run(str(path), xs[key], reference=False)
                results[f"{n}/{key}/reference"] = _run(str(path), xs[key], reference=True)
        emulated, emu_label = None, None
        if a.emulate != "none":
            np.savez(out / "inputs.npz", **xs)
            job = out / "job.json"
            job.write_text(json.dumps({"inputs": str(out / "inputs.npz"), "outputs": str(out / "emu.npz"),
                                       "artifacts": {n: str(p) for n, p in arts.items()}}))  # fmt: skip
            print(f"evaluating under qemu-x86_64 -cpu {a.emulate} (slow: every instruction is emulated)")
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            proc = subprocess.run(["qemu-x86_64", "-cpu", a.emulate, sys.executable, __file__, "--child", str(job)],
                                  env=env, capture_output=True, text=True)  # fmt: skip
            if proc.returncode != 0:
                sys.exit("qemu child failed:\n" + proc.stderr[-3000:])
            emulated = dict(np.load(out / "emu.npz"))
            emu_label = (out / "emu.npz.cpu").read_text()
        seconds = time.perf_counter() - t0

    print(f"\nEfficientNet-Lite0 ONNX int8 vs fp32 PyTorch; onnxruntime {_ort_version()}")
    print(f"this CPU:    {isa_label()}")
    if emu_label:
        print(f"AVX2 (qemu): {emu_label}")
    print("\n| config | evaluated by | eval 96: top-1 | cosine | held-out 204: top-1 | cosine | p50 ms here |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        rows = [("reference (graph as written)", results, "reference"), ("this CPU's int8 kernel", results, "host")]
        if emulated is not None:
            rows.append((f"{a.emulate} AVX2 kernel (qemu)", emulated, "host"))
        for label, src, kind in rows:
            e_top, e_cos = _metrics(refs["eval"], src[f"{n}/eval/{kind}"])
            h_top, h_cos = _metrics(refs["held"], src[f"{n}/held/{kind}"])
            ms = f"{latency[n]:.1f}" if kind == "host" and src is results else ""
            print(f"| {n} | {label} | {e_top}/96 ({e_top / 96:.3f}) | {e_cos:.4f} | "
                  f"{h_top}/{len(refs['held'])} ({h_top / len(refs['held']):.3f}) | {h_cos:.4f} | {ms} |")  # fmt: skip
    if emulated is not None:
        worst = max(float(np.max(np.abs(emulated[f"{n}/eval/reference"] - results[f"{n}/eval/reference"])))
                    for n in names)  # fmt: skip
        print(f"\nreference under qemu vs this CPU, evaluation views, all configs: max |diff| of logits {worst:.2e}")
    print(f"total {seconds:.0f} s")


def _latency(arts: dict[str, Path], x: np.ndarray, rounds: int = 100) -> dict[str, float]:
    """p50 ms of one inference per config on this CPU, 1 thread, the configs interleaved round by round."""
    from packager.export.onnx import OnnxSession

    sessions = {n: OnnxSession(p, threads=1) for n, p in arts.items()}
    for s in sessions.values():
        for _ in range(10):
            s.run((x,))
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for n, s in sessions.items():
            t0 = time.perf_counter()
            s.run((x,))
            times[n].append((time.perf_counter() - t0) * 1000)
    return {n: float(np.median(t)) for n, t in times.items()}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
