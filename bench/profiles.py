"""Per-operator profiles of EfficientNet-Lite0 on this host and on mpk's virtual device: issue #16's numbers.

    python bench/profiles.py                      # EfficientNet-Lite0 fp32 + int8, ExecuTorch + ONNX (~10 min)
    python bench/profiles.py --model digits-cnn   # quick mode

Packages the model (the artifact cache makes a re-run cheap), runs ``mpk bench --profile`` on ``host`` and on
an absent phone's stand-in (the virtual device, emulated), and prints per cell: the profile's status, the ops'
total per inference against the unprofiled mean and p50, what profiling costs (a profiled inference's wall time
against the unprofiled p50), the share of time on a named PyTorch module; then the five slowest units side by
side. Run it on a quiet machine: every number here is a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEVICES = """\
version: 1
defaults: {warmup_iterations: 5, min_iterations: 60, min_seconds: 3, max_seconds: 60, cooldown_s: 2, threads: 1}
devices:
  - {id: host, kind: host, profile: true}
  - {id: pixel-7, kind: android, serial: MPK-BENCH-ABSENT, transport: adb_server, threads: 1, profile: true}
"""


def mpk(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mpk", *args], cwd=cwd, env=env, text=True, capture_output=True)
    if r.returncode not in (0, 1):
        sys.exit(f"mpk {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--keep", type=Path, help="keep the package, results and traces here")
    args = ap.parse_args()
    from mpk.hostcpu import describe
    from runners.report.profiles import markdown

    work = args.keep or Path(tempfile.mkdtemp(prefix="mpk-profiles-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "devices.yaml").write_text(DEVICES)
    mpk("package", "--model", args.model, "--quantize", "none,int8", "--backends", "executorch,onnx", "--out", "pkg",
        "--force", cwd=work)  # fmt: skip
    mpk("bench", "pkg/manifest.json", "--devices", "devices.yaml", "--fallback", "emulator", "--out", "bench",
        "--force", cwd=work)  # fmt: skip
    results = json.loads((work / "bench" / "results.json").read_text())
    print(f"{args.model} on {describe()}")
    print(f"{'cell':42s} {'profile':10s} {'ops ms':>8s} {'mean ms':>8s} {'vs mean':>8s} {'p50 ms':>8s} "
          f"{'overhead':>9s} {'on module':>9s}")  # fmt: skip
    for c in results["cells"]:
        p = (c.get("result") or {}).get("profile")
        if not p:
            continue
        label = f"{c['device_id']}{' (emulated)' if c['emulated'] else ''} / {c['artifact_id']}"
        mean, total = p.get("unprofiled_mean_ms"), p.get("per_run_ms")
        vs_mean = f"{total / mean - 1:+.1%}" if total and mean else "-"
        over = f"{p['overhead']:+.1%}" if p.get("overhead") is not None else "-"
        share = f"{p['attributed_share']:.1%}" if p.get("attributed_share") is not None else "-"
        print(f"{label:42s} {p['status']:10s} {total or 0:8.3f} {mean or 0:8.3f} {vs_mean:>8s} "
              f"{p.get('unprofiled_p50_ms') or 0:8.3f} {over:>9s} {share:>9s}")  # fmt: skip
    print()
    print("\n".join(markdown(results)))
    print(f"results and Chrome traces: {work / 'bench'}")


if __name__ == "__main__":
    main()
