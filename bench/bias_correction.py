"""What does bias correction do to int8, on the evaluation set and on images it never saw?

Prints one table per data set. Four int8 exports from the same 32 calibration views: for ONNX, ORT's
``quantize_static`` as it comes and the same model after mpk's bias correction
(packager/export/bias_correction.py); for ExecuTorch, PT2E with XNNPACK's quantizer as mpk configures it,
with and without its bias correction (packager/export/pt2e_bias_correction.py). Each artifact runs on its
own host runtime (ONNX Runtime, ExecuTorch pybindings with XNNPACK) and is compared with the fp32 PyTorch
model on:

* ``eval``: mpk's evaluation set for the model (for EfficientNet-Lite0, 96 views of 8 skimage photos, at
  scales the calibration never used). This is the set ``mpk package`` verifies on;
* ``held-out``: for EfficientNet-Lite0, the same 12 views of the 17 *other* skimage images, which neither
  calibration nor any mpk tolerance ever saw;
* ``held-out, fp32 sure``: the held-out samples where fp32's top-1 probability beats its second by > 0.1.
  On textures such as grass or gravel fp32 itself is unsure, and top-1 there is a coin toss.

Usage::

    python bench/bias_correction.py                     # efficientnet-lite0, ~4 min on 2 cores
    python bench/bias_correction.py --model digits-cnn  # quick (no held-out set)

``scale`` is the mean ratio of the int8 logits' norm to fp32's: 1.0 means the same size. Top-1 and cosine
do not see it; softmax probabilities do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _outputs(run, samples) -> np.ndarray:
    return np.concatenate([np.asarray(run(s)[0]).reshape(1, -1) for s in samples])


def _row(name: str, ref: np.ndarray, got: np.ndarray) -> str:
    from packager.verify import compute_metrics

    m = compute_metrics([ref], [got], classifier=True)
    agree = round(m["top1_agreement"] * len(ref))
    scale = float(np.mean(np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)))
    return (
        f"{name:<26} {agree:>4}/{len(ref):<4} {m['top1_agreement']:>7.3f} {m['cosine']:>8.4f} "
        f"{m['snr_db']:>7.1f} {scale:>6.3f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--calibration-count", type=int, default=32)
    a = p.parse_args()

    import torch

    from packager.data import load_dataset
    from packager.data.builtin import HELD_OUT_PHOTOS, photo_views
    from packager.export.executorch import ExecuTorchExporter
    from packager.export.onnx import OnnxExporter
    from packager.models import load_model
    from packager.models.loaders import example_shape

    model = load_model(a.model)
    cal = load_dataset("builtin", model, count=a.calibration_count, purpose="calibration", seed=0, preprocess=None)
    sets = {"eval": load_dataset("builtin", model, count=None, purpose="evaluation", seed=1, preprocess=None)}
    if a.model == "efficientnet-lite0":
        sets["held-out"] = photo_views(
            HELD_OUT_PHOTOS, example_shape(model.inputs[0]), model.preprocess, None, "evaluation"
        )

    def torch_run(s):
        with torch.no_grad():
            return [model.module(*(torch.from_numpy(x) for x in s)).numpy()]

    refs = {k: _outputs(torch_run, d.samples) for k, d in sets.items()}
    with tempfile.TemporaryDirectory() as tmp:
        arts, secs = {}, {}
        makers = [("onnx: quantize_static", OnnxExporter(bias_correction=False))]
        makers += [("onnx: + bias correction", OnnxExporter(bias_correction=True))]
        makers += [("executorch: PT2E", ExecuTorchExporter(bias_correction=False))]
        makers += [("executorch: + bias corr.", ExecuTorchExporter(bias_correction=True))]
        for k, (label, ex) in enumerate(makers):
            t0 = time.perf_counter()
            arts[label] = (ex, ex.export(model, "int8", cal, Path(tmp) / str(k)))
            secs[label] = time.perf_counter() - t0
        print(f"\nmodel={a.model}  int8 vs fp32 PyTorch  calibration={len(cal)} views")
        head = f"{'':<26} {'top-1 agree':>9} {'':>7} {'cosine':>8} {'SNR dB':>7} {'scale':>6}"
        for key, data in sets.items():
            ref = refs[key]
            print(f"\n[{key}] {data.source}, {len(ref)} samples")
            print(head)
            sure = None
            if key == "held-out":
                prob = np.exp(ref - ref.max(axis=1, keepdims=True))
                prob /= prob.sum(axis=1, keepdims=True)
                top2 = np.sort(prob, axis=1)[:, -2:]
                sure = (top2[:, 1] - top2[:, 0]) > 0.1
            for label, (ex, art) in arts.items():
                sess = ex.open(art.path, threads=None)
                got = _outputs(lambda s, sess=sess: sess.run(tuple(s)), data.samples)
                print(_row(label, ref, got))
                if sure is not None:
                    print(_row("  fp32 sure only", ref[sure], got[sure]))
        print("\nexport time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
        for label in ("onnx: + bias correction", "executorch: + bias corr."):
            print(f"{label}: {arts[label][1].details['quantizer']['bias_correction']}")


if __name__ == "__main__":
    main()
