"""What does bias correction do to ONNX int8, on the evaluation set and on images it never saw?

Prints one table. The fp32 ONNX export and two int8 exports, from the same 32 calibration views:
ORT's ``quantize_static`` as it comes, and the same model after mpk's bias correction
(packager/export/bias_correction.py). mpk's ExecuTorch int8 from the same views is the third row,
for reference. Each is compared with the fp32 PyTorch model on:

* ``eval``: mpk's evaluation set for the model (for EfficientNet-Lite0, 96 views of 8 skimage photos, at
  scales the calibration never used). This is the set ``mpk package`` verifies on;
* ``held-out``: for EfficientNet-Lite0, the same 12 views of the 17 *other* skimage images, which neither
  calibration nor any mpk tolerance ever saw;
* ``held-out, fp32 sure``: the held-out samples where fp32's top-1 probability beats its second by > 0.1.
  On textures such as grass or gravel fp32 itself is unsure, and top-1 there is a coin toss.

Usage::

    python bench/onnx_bias_correction.py                     # efficientnet-lite0, ~2 min on 2 cores
    python bench/onnx_bias_correction.py --model digits-cnn  # quick (no held-out set)
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
    return f"{name:<22} {agree:>4}/{len(ref):<4} {m['top1_agreement']:>7.3f} {m['cosine']:>8.4f} {m['snr_db']:>7.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet-lite0")
    p.add_argument("--calibration-count", type=int, default=32)
    a = p.parse_args()

    import torch

    from packager.data import load_dataset
    from packager.data.builtin import HELD_OUT_PHOTOS, photo_views
    from packager.export import get_exporter
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
        makers = [("ORT quantize_static", OnnxExporter(bias_correction=False))]
        makers += [("+ bias correction", OnnxExporter(bias_correction=True))]
        makers += [("executorch int8 (ref.)", get_exporter("executorch"))]
        for k, (label, ex) in enumerate(makers):
            t0 = time.perf_counter()
            arts[label] = (ex, ex.export(model, "int8", cal, Path(tmp) / str(k)))
            secs[label] = time.perf_counter() - t0
        print(f"\nmodel={a.model}  int8 vs fp32 PyTorch  calibration={len(cal)} views")
        head = f"{'':<22} {'top-1 agree':>9} {'':>7} {'cosine':>8} {'SNR dB':>7}"
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
        report = arts["+ bias correction"][1].details["quantizer"]["bias_correction"]
        print(f"bias correction: {report}")


if __name__ == "__main__":
    main()
