"""Structured pruning + distillation + int8 on ExecuTorch: what it buys on this host, printed as a table.

    python bench/compression.py                       # EfficientNet-Lite0, 30% channels, ~10 min on 2 cores
    python bench/compression.py --model digits-cnn    # quick mode, under a minute

Rows: fp32, int8 (original) and pruned-fp32, pruned-int8 (after distillation
from the original). Columns: parameters, .pte size, host latency (median of
``--iters`` runs of the ExecuTorch runtime with XNNPACK on this CPU: a
ranking, not a phone number), top-1 agreement with fp32 PyTorch on the
evaluation views, and accuracy where the data has labels (digits only; the
built-in photos are unlabelled). Exit 1 when pruned parameters exceed 0.75x.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = {
    # Adam at the model's own training rate; no crops (an 8x8 digit shifted by a pixel is a different glyph)
    "digits-cnn": {"ratio": 0.5, "epochs": 20, "lr": 0.003, "optimizer": "adam", "batch": 64, "augment": "none",
                   "max_seconds": 120, "calib": 64, "train": None, "eval": None},
    # SGD + cosine from the pretrained weights on 132 augmented photo views, capped at 8 minutes
    "efficientnet-lite0": {"ratio": 0.3, "epochs": 30, "lr": 0.01, "optimizer": "sgd", "batch": 16,
                           "augment": "crop_flip", "max_seconds": 480, "calib": 32, "train": None, "eval": 48},
}  # fmt: skip


def _latency(sess, x, iters: int) -> float:
    for _ in range(3):
        sess.run(x)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0", choices=sorted(PRESETS))
    ap.add_argument("--ratio", type=float, help="structured prune ratio (default: preset)")
    ap.add_argument("--epochs", type=int, help="distillation epochs (default: preset)")
    ap.add_argument("--max-seconds", type=float, help="distillation wall-clock cap (default: preset)")
    ap.add_argument("--iters", type=int, default=30, help="timed runs per artifact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the .pte files here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    import numpy as np
    import torch

    from packager.compress.distill import DistillConfig, distill, stack_samples
    from packager.compress.recipe_io import CompressionConfig, apply_compression
    from packager.compress.sensitivity import compare
    from packager.compress.structured import StructuredPruneConfig
    from packager.data import load_dataset
    from packager.export import get_exporter
    from packager.models import load_model

    p = PRESETS[args.model]
    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    model = load_model(args.model)
    train = load_dataset("builtin", model, count=p["train"], purpose="calibration")
    calib = dataclasses.replace(train, samples=train.samples[: p["calib"]])
    ev = load_dataset("builtin", model, count=p["eval"], purpose="evaluation")
    dcfg = DistillConfig(
        epochs=args.epochs or p["epochs"],
        lr=p["lr"],
        optimizer=p["optimizer"],
        batch_size=p["batch"],
        augment=p["augment"],
        max_seconds=args.max_seconds or p["max_seconds"],
    )
    cfg = CompressionConfig(
        structured=StructuredPruneConfig(ratio=args.ratio if args.ratio is not None else p["ratio"])
    )
    t0 = time.monotonic()
    comp = apply_compression(model, cfg, calib, progress=False)
    with torch.no_grad():
        ref = [model.module.eval()(*(torch.from_numpy(a) for a in s)).numpy() for s in ev.samples]
        before = [comp.model.module.eval()(*(torch.from_numpy(a) for a in s)).numpy() for s in ev.samples]
    agr_before = compare(ref, before)["top1_agreement"]
    # distill as its own step so the table can show what recovery bought
    comp.report["distill"] = distill(
        comp.model.module, model.module, stack_samples(train.samples), None, dcfg, progress=sys.stderr.isatty()
    ).to_dict()
    t_compress = time.monotonic() - t0
    out = args.out or Path(tempfile.mkdtemp(prefix="mpk-bench-compress-"))
    ex = get_exporter("executorch")
    x = tuple(np.asarray(a) for a in ev.samples[0])
    rows = []
    for label, lm, scheme in (
        ("fp32", model, "fp32"),
        ("int8", model, "int8"),
        ("pruned-fp32", comp.model, "fp32"),
        ("pruned-int8", comp.model, "int8"),
    ):
        art = ex.export(lm, scheme, calib, out / label)
        sess = ex.open(art.path, threads=args.threads)
        outs = [sess.run(s)[0] for s in ev.samples]
        m = compare(ref, outs)
        acc = None
        if ev.labels is not None:
            acc = float(np.mean([o.reshape(-1).argmax() == y for o, y in zip(outs, ev.labels, strict=True)]))
        params = sum(q.numel() for q in lm.module.parameters())
        rows.append((label, params, art.path.stat().st_size, _latency(sess, x, args.iters), m["top1_agreement"], acc))

    s = comp.report["structured"]
    print(f"\n{args.model}: structured prune {cfg.structured.ratio:g} (l1, round_to=8) + distillation "
          f"({comp.report['distill']['epochs_run']} epochs, {comp.report['distill']['seconds']:.0f}s, "
          f"stopped by {comp.report['distill']['stopped_by']}); ExecuTorch/XNNPACK, {args.threads} thread(s), "
          f"{len(ev)} eval samples")  # fmt: skip
    print(f"pruned, before distillation: top-1 agreement {agr_before:.4f} (PyTorch)")
    print(f"{'artifact':<12} {'params':>10} {'size MB':>8} {'p50 ms':>8} {'top1 agr':>9} {'accuracy':>9}")
    for label, params, size, lat, top1, acc in rows:
        a = f"{acc:.4f}" if acc is not None else "-"
        print(f"{label:<12} {params:>10,} {size / 1e6:>8.3f} {lat:>8.3f} {top1:>9.4f} {a:>9}")
    ratio = s["params_after"] / s["params_before"]
    print(f"params pruned/original = {ratio:.3f} (must be <= 0.75); MACs {s['macs_after'] / s['macs_before']:.3f}x; "
          f"compression {t_compress:.0f}s, total {time.monotonic() - t_start:.0f}s")  # fmt: skip
    return 0 if ratio <= 0.75 else 1


if __name__ == "__main__":
    sys.exit(main())
