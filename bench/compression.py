"""What pruning buys on this host, in one run: ``mpk tune``'s search, then the artifacts side by side.

    python bench/compression.py                       # EfficientNet-Lite0: tune (20 min budget) + export, ~30 min
    python bench/compression.py --model digits-cnn    # 50% channels + distillation + int8, ~2 min

EfficientNet-Lite0: ``run_tune`` (what ``mpk tune --model efficientnet-lite0 --floor top1_agreement=0.95``
runs) measures every channel group's sensitivity, searches the largest MAC reduction whose PyTorch fp32
model agrees with the original on the held-out views (17 skimage images never used for calibration,
evaluation, BatchNorm re-estimation or distillation), and names the groups that limited it. Its tables are
printed as they are. Then the unpruned model and the chosen variant are exported to ExecuTorch fp32 and
int8 and measured here: size, host latency (every artifact timed in the same interleaved rounds, so drift
of a shared machine hits all of them alike; median and the spread of the per-round medians), and top-1
agreement with fp32 PyTorch on the held-out views whose fp32 top-1 is clear (:mod:`mpk.metrics`, the one
definition verification uses) and on those where fp32 is sure (top-1 probability beats top-2 by > 0.1).

digits-cnn: structured 50% + distillation (the recipe tests/integration/test_pkg_compression.py uses),
accuracy on the labelled test split.

Exit 1 when the pruned int8 artifact is not smaller than the unpruned int8 one (or nothing met the floor).
Latency is a ranking on this host, not a phone number.
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

DIGITS_DISTILL = {"epochs": 20, "optimizer": "adam", "lr": 0.003, "batch_size": 64, "augment": "none"}


def _rounds(sessions: dict[str, object], x: tuple, iters: int, rounds: int) -> dict[str, tuple[float, float, float]]:
    """Interleaved timing: each round runs every artifact ``iters`` times. -> label: (median, min, max) of
    the per-round medians, in ms."""
    per: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(3):
            s.run(x)  # warm-up: first runs allocate and pack weights
    for _ in range(rounds):
        for k, s in sessions.items():
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                s.run(x)
                times.append((time.perf_counter() - t) * 1e3)
            per[k].append(statistics.median(times))
    return {k: (statistics.median(v), min(v), max(v)) for k, v in per.items()}


def _table(rows: list[dict], data_label: str) -> None:
    print(
        f"\n{'artifact':<26} {'MACs':>7} {'params':>10} {'size MB':>8} {'p50 ms':>8} {'(rounds)':>15} "
        f"{'top-1 agr':>9} {'sure':>6} {'accuracy':>8}"
    )
    for r in rows:
        lat = r["latency"]
        acc = f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "-"
        sure = f"{r['sure']:.3f}" if r.get("sure") is not None else "-"
        print(
            f"{r['label']:<26} {r['macs']:>7} {r['params']:>10,} {r['size'] / 1e6:>8.3f} {lat[0]:>8.3f} "
            f"{f'{lat[1]:.2f}-{lat[2]:.2f}':>15} {r['top1']:>9.4f} {sure:>6} {acc:>8}"
        )
    print(f"agreement: with fp32 PyTorch on {data_label}")


def _measure(variants, data, threads: int, iters: int, rounds: int, out: Path) -> list[dict]:
    """variants: [(label, LoadedModel, scheme, macs label)] -> rows with size, latency, agreement."""
    import numpy as np

    from packager.export import get_exporter
    from packager.verify import compute_metrics

    ex = get_exporter("executorch")
    arts, sessions = {}, {}
    for label, lm, scheme, _ in variants:
        arts[label] = ex.export(lm, scheme, data["calibration"], out / label.replace(" ", "_"))
        sessions[label] = ex.open(arts[label].path, threads=threads)
    x = tuple(np.asarray(a) for a in data["held_out"].samples[0])
    lat = _rounds(sessions, x, iters, rounds)
    rows = []
    for label, lm, _scheme, macs in variants:
        outs = np.stack([np.asarray(sessions[label].run(s)[0]) for s in data["held_out"].samples])
        outs = outs.reshape(data["reference"].shape)
        m = compute_metrics([data["reference"]], [outs], classifier=True, labels=data["held_out"].labels)
        sure = None
        if data.get("sure") is not None and data["sure"].any():
            sure = compute_metrics([data["reference"][data["sure"]]], [outs[data["sure"]]], classifier=True)
            sure = sure["top1_agreement"]
        rows.append(
            {
                "label": label,
                "macs": macs,
                "params": sum(p.numel() for p in lm.module.parameters()),
                "size": arts[label].path.stat().st_size,
                "latency": lat[label],
                "top1": m["top1_agreement"],
                "sure": sure,
                "accuracy": m["accuracy"],
            }
        )
    return rows


def effnet(args: argparse.Namespace) -> int:
    import torch

    from packager.compress.recipe_io import apply_compression
    from packager.compress.tune import TuneConfig, _load_data, format_result, run_tune
    from packager.models import load_model

    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    cfg = TuneConfig(
        model="efficientnet-lite0",
        floor={"top1_agreement": args.floor},
        target="macs",
        schemes=("fp32",),
        calibration_count=96,
        eval_count=96,
        budget_seconds=args.budget_minutes * 60,
        threads=args.threads,
        latency_iters=5,
    )
    print(f"mpk tune: EfficientNet-Lite0, floor top-1 agreement >= {args.floor} on held-out views, "
          f"budget {args.budget_minutes:g} min, {args.threads} thread(s)", flush=True)  # fmt: skip
    res = run_tune(cfg, None, progress=sys.stderr.isatty(), echo=lambda s: print(s, flush=True))
    print()
    print(format_result(res))
    print(f"tune: {res.seconds:.0f}s")
    model = load_model("efficientnet-lite0")
    data_ = _load_data(cfg, model, None)
    data = {"calibration": data_.calibration, "held_out": data_.held_out, "reference": data_.reference,
            "sure": data_.sure}  # fmt: skip
    variants = [("fp32", model, "fp32", "1.000"), ("int8", model, "int8", "1.000")]
    chosen = res.chosen
    if chosen is None:
        # nothing met the floor: show the variant that came closest, so the table says what pruning costs
        search = [t for t in res.trials if t.scheme == "pytorch-fp32" and t.status == "ok"]
        chosen = max(search, key=lambda t: (t.top1_agreement, t.mac_reduction)) if search else None
    if chosen is not None and chosen.per_layer:
        comp = apply_compression(
            model, cfg.compression_for(chosen.prune, chosen.per_layer), data_.calibration, training=data_.training,
            guard=data_.guard, progress=False,
        )  # fmt: skip
        macs = f"{1 - chosen.mac_reduction:.3f}"
        tag = f"pruned -{chosen.mac_reduction:.1%} MACs"
        variants += [(f"{tag} fp32", comp.model, "fp32", macs), (f"{tag} int8", comp.model, "int8", macs)]
    out = args.out or Path(tempfile.mkdtemp(prefix="mpk-bench-compress-"))
    rows = _measure(variants, data, args.threads, args.iters, args.rounds, out)
    print(f"\nEfficientNet-Lite0, ExecuTorch/XNNPACK, {args.threads} thread(s), latency: {args.rounds} interleaved "
          f"rounds x {args.iters} runs")  # fmt: skip
    from mpk import metrics

    n_clear = metrics.top1_counted(data_.reference)
    n_sure = int(data_.sure.sum())
    _table(rows, f"{len(data_.held_out)} held-out views; 'top-1 agr' counts the {n_clear} with a clear fp32 top-1 "
                 f"(mpk.metrics), 'sure' the {n_sure} where fp32's top-1 beats top-2 by > 0.1")  # fmt: skip
    if res.chosen is None:
        print(f"no variant met the floor; the pruned rows are the closest one tried (MACs -{chosen.mac_reduction:.1%})"
              if chosen is not None else "no variant met the floor")  # fmt: skip
    print(f"total {time.monotonic() - t_start:.0f}s")
    by = {r["label"]: r for r in rows}
    pruned_int8 = [r for r in rows if r["label"].endswith(" int8") and r["label"] != "int8"]
    ok = res.chosen is not None and bool(pruned_int8) and pruned_int8[0]["size"] < by["int8"]["size"]
    return 0 if ok else 1


def digits(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from packager.compress.recipe_io import apply_compression, parse_compression
    from packager.data import load_dataset
    from packager.models import load_model

    torch.set_num_threads(1)
    model = load_model("digits-cnn")
    train = load_dataset("builtin", model, count=None, purpose="calibration")
    calib = dataclasses.replace(train, samples=train.samples[:64])
    test = load_dataset("builtin", model, count=None, purpose="evaluation")
    cfg = parse_compression({"structured": {"ratio": 0.5}, "distill": DIGITS_DISTILL})
    comp = apply_compression(model, cfg, calib, training=train, progress=False, echo=print)
    with torch.no_grad():
        ref = np.stack([model.module(torch.from_numpy(s[0])).numpy() for s in test.samples])
    data = {"calibration": calib, "held_out": test, "reference": ref, "sure": None}
    s = comp.report["structured"]
    macs = f"{s['mac_ratio']:.3f}"
    variants = [
        ("fp32", model, "fp32", "1.000"),
        ("int8", model, "int8", "1.000"),
        ("pruned 50% + distilled fp32", comp.model, "fp32", macs),
        ("pruned 50% + distilled int8", comp.model, "int8", macs),
    ]
    out = args.out or Path(tempfile.mkdtemp(prefix="mpk-bench-compress-"))
    rows = _measure(variants, data, 1, args.iters, args.rounds, out)
    print("\ndigits-cnn, ExecuTorch/XNNPACK, 1 thread")
    _table(rows, f"the {len(test)}-image test split (accuracy: its labels)")
    fp32_acc = rows[0]["accuracy"]
    drop = fp32_acc - rows[3]["accuracy"]
    print(f"pruned int8 accuracy {rows[3]['accuracy']:.4f} vs fp32 {fp32_acc:.4f}: {drop * 100:+.2f} points "
          f"(must be within 1)")  # fmt: skip
    return 0 if drop <= 0.01 and rows[3]["size"] < rows[1]["size"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0", choices=("efficientnet-lite0", "digits-cnn"))
    ap.add_argument("--floor", type=float, default=0.95, help="top-1 agreement floor on held-out views")
    ap.add_argument("--budget-minutes", type=float, default=20.0, help="mpk tune's search budget")
    ap.add_argument("--iters", type=int, default=10, help="timed runs per artifact per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the .pte files here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    return effnet(args) if args.model == "efficientnet-lite0" else digits(args)


if __name__ == "__main__":
    sys.exit(main())
