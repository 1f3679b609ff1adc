"""Wall time of a 2-device ``mpk bench`` matrix: on one machine, and across two Ray agent hosts.

Both runs measure the same matrix: two "phones" (mpk's virtual Android device, each its own process, as
``mpk emulator start`` runs it) x the package's artifacts, with the same settings.

1. ``mpk bench`` on this machine. The two virtual devices time on this machine's CPU, so they share the
   host-CPU lock: their cells run one after another.
2. ``mpk bench --ray`` on a loopback Ray cluster (a head and two ``mpk agent`` hosts, worker-a and
   worker-b, each owning one of the phones). Each host has its own host-CPU lock, so the two phones' cells
   run at the same time, each on the agent that owns it. The cluster is started before the timed run; its
   start-up is printed on its own row.

On one machine the two "hosts" share its cores, so row 2 overstates what two real hosts would gain for
emulated devices and understates it for phones (a phone times on itself). Usage::

    python bench/ray_matrix.py                         # packages digits-cnn (onnx fp32 + int8) first
    python bench/ray_matrix.py --manifest pkg/manifest.json --min-seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.transport.adbkey import ensure_key  # noqa: E402
from tests.integration.ray_helpers import LocalCluster  # noqa: E402
from tests.integration.vdevice_helpers import start_device_process, stop_device_process  # noqa: E402


def _mpk(args: list[str], env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mpk", *args], env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"mpk {args[0]} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    out = Path(args[args.index("--out") + 1]) / "results.json" if args[0] == "bench" else None
    return dt, json.loads(out.read_text()) if out else {}


def _cell_seconds(doc: dict) -> float:
    from datetime import datetime

    def t(s: str) -> float:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

    return sum(t(c["finished_utc"]) - t(c["started_utc"]) for c in doc["cells"] if c["started_utc"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, help="a package's manifest.json (default: package digits-cnn)")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per cell (devices.yaml)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mpk-ray-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(work / "cfg"),
           "MPK_STATE_DIR": str(work / "state")}  # fmt: skip
    manifest = args.manifest
    if manifest is None:
        _mpk(["package", "--model", "digits-cnn", "--quantize", "none,int8", "--backends", "onnx", "--out",
              str(work / "pkg")], env)  # fmt: skip
        manifest = work / "pkg" / "manifest.json"
    key = ensure_key(work / "cfg" / "mpk" / "adbkey")
    phones = {}
    cluster = None
    try:
        for host in ("worker-a", "worker-b"):
            (work / host).mkdir()
            phones[host] = start_device_process(work / host, key)
        devices = [{"id": f"phone-{h[-1]}", "kind": "emulator", "serial": f"127.0.0.1:{phones[h][1]}", "host": h}
                   for h in phones]  # fmt: skip
        devices_yaml = work / "devices.yaml"
        defaults = {"warmup_iterations": 5, "min_iterations": 30, "min_seconds": args.min_seconds, "cooldown_s": 0}
        devices_yaml.write_text(json.dumps({"version": 1, "defaults": defaults, "devices": devices}))
        common = [str(manifest), "--devices", str(devices_yaml)]

        local_s, local = _mpk(["bench", *common, "--out", str(work / "local")], env)
        cluster = LocalCluster(work, devices_yaml)
        cluster.env.update(XDG_CONFIG_HOME=env["XDG_CONFIG_HOME"], MPK_STATE_DIR=env["MPK_STATE_DIR"])
        t0 = time.perf_counter()
        cluster.start_head()
        for host in phones:
            cluster.start_agent(host)
        start_s = time.perf_counter() - t0
        ray_s, ray = _mpk(["bench", *common, "--out", str(work / "ray"), "--ray", cluster.address], cluster.env)
    finally:
        if cluster is not None:
            cluster.stop()
        for proc, _, _ in phones.values():
            stop_device_process(proc)
        shutil.rmtree(work, ignore_errors=True)

    n = len(local["cells"])
    print(f"2 virtual phones x {n // 2} artifacts, >= {args.min_seconds:g} s timed per cell; {os.cpu_count()} CPUs")
    print()
    print("| run | wall s | cells | sum of cell times s |")
    print("|---|---|---|---|")
    print(f"| `mpk bench`, one machine (one host-CPU lock) | {local_s:.1f} | {n} | {_cell_seconds(local):.1f} |")
    print(f"| `mpk bench --ray`, two agent hosts | {ray_s:.1f} | {len(ray['cells'])} | {_cell_seconds(ray):.1f} |")
    print(f"| Ray cluster start (head + 2 agents), before the run | {start_s:.1f} | - | - |")


if __name__ == "__main__":
    main()
