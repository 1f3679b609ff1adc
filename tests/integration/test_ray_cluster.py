"""mpk on a real Ray cluster: a head and two agent hosts on loopback, each agent owning one virtual device.

The cluster is real Ray 2.60 (``mpk agent``: Ray nodes with one custom resource per device), started once for
the module (Ray starts slowly on two cores) and ended afterwards, every process of it. Each host's "phone" is
mpk's virtual Android device run as its own process, as ``mpk emulator start`` runs it, with a profile that
names its host in the SoC fact, so a cell's device facts show which device really ran it; ``where`` shows
which Ray node and process did. The benchmarks are the real host runner on a tiny real ONNX model. Nothing is
mocked.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")

from mpk.contract import read_results
from runners.transport.adbkey import ensure_key
from tests.integration.ray_helpers import REPO, LocalCluster
from tests.integration.vdevice_helpers import start_device_process, stop_device_process

sys.path.insert(0, str(Path(__file__).parent))
from bench_helpers import tiny_package

pytestmark = pytest.mark.ray

ARTS = ["onnx-fp32", "onnx-fp32-b", "onnx-fp32-c"]
FAST = {"warmup_iterations": 1, "min_iterations": 5, "min_seconds": 0.2, "cooldown_s": 0}
HOSTS = {"host-a": "worker-a", "phone-a": "worker-a", "phone-b": "worker-b"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """The package, two virtual phones, devices.yaml and the cluster (head, worker-a, worker-b)."""
    root = tmp_path_factory.mktemp("lab")
    pkg = tiny_package(root / "pkg")
    m = json.loads(pkg.read_text())
    onnx = next(a for a in m["artifacts"] if a["id"] == "onnx-fp32")
    m["artifacts"] = [{**onnx, "id": a} for a in ARTS]  # three ONNX-fast cells per device
    pkg.write_text(json.dumps(m))
    cfg_home = root / "cfg"
    key = ensure_key(cfg_home / "mpk" / "adbkey")
    os.environ["XDG_CONFIG_HOME"], old_cfg = str(cfg_home), os.environ.get("XDG_CONFIG_HOME")
    phones: dict[str, tuple] = {}
    cluster = None
    try:
        for host in ("worker-a", "worker-b"):
            d = root / host
            d.mkdir()
            (d / "profile.json").write_text(json.dumps({"props": {"ro.soc.model": f"virtual ({host})"}}))
            phones[host] = start_device_process(d, key, "--profile", str(d / "profile.json"))
        devices = [
            {"id": "host-a", "kind": "host", "host": "worker-a"},
            {"id": "phone-a", "kind": "emulator", "serial": f"127.0.0.1:{phones['worker-a'][1]}", "host": "worker-a"},
            {"id": "phone-b", "kind": "emulator", "serial": f"127.0.0.1:{phones['worker-b'][1]}", "host": "worker-b"},
        ]
        devices_yaml = root / "devices.yaml"
        devices_yaml.write_text(yaml.safe_dump({"version": 1, "defaults": FAST, "devices": devices}))
        cluster = LocalCluster(root, devices_yaml)
        cluster.env["XDG_CONFIG_HOME"] = str(cfg_home)
        cluster.env["MPK_STATE_DIR"] = str(root / "state")
        cluster.start_head()
        for host in ("worker-a", "worker-b"):
            cluster.start_agent(host)
        yield {"root": root, "pkg": pkg, "devices": devices_yaml, "cluster": cluster, "phones": phones}
    finally:
        if cluster is not None:
            cluster.stop()
        for proc, _, _ in phones.values():
            stop_device_process(proc)
        if old_cfg is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = old_cfg


@pytest.fixture()
def driver_env(lab, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    """This process as a driver of the lab's cluster (same token, same state folder for the host locks)."""
    cluster: LocalCluster = lab["cluster"]
    for k, v in {**cluster.driver_env(), "MPK_STATE_DIR": cluster.env["MPK_STATE_DIR"]}.items():
        monkeypatch.setenv(k, v)
    return cluster


def _window(cell: dict) -> tuple[datetime, datetime]:
    def parse(s: str) -> datetime:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")

    return parse(cell["started_utc"]), parse(cell["finished_utc"])


def test_bench_runs_every_cell_on_the_host_that_owns_its_device(lab, driver_env: LocalCluster, tmp_path: Path):
    """`mpk bench --ray` as a user runs it: exit 0, one results.json, every cell where its device is."""
    cluster = driver_env
    out = tmp_path / "out"
    env = {**cluster.env}
    r = subprocess.run([sys.executable, "-m", "mpk", "bench", str(lab["pkg"]), "--devices", str(lab["devices"]),
                        "--out", str(out), "--ray", cluster.address], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mpk bench --ray: 9/9 cells" in r.stderr, r.stderr  # the live table, by host and device
    doc = read_results(out / "results.json")  # schema-valid, as every results file
    assert doc["complete"] is True and doc["config"]["ray"]["hosts"] == HOSTS
    assert {(c["device_id"], c["artifact_id"]) for c in doc["cells"]} == {(d, a) for d in HOSTS for a in ARTS}
    nodes = {h: cluster.info[h]["node_id"] for h in ("worker-a", "worker-b")}
    for c in doc["cells"]:
        assert c["outcome"] == "ok", (c["device_id"], c["error"])
        host = HOSTS[c["device_id"]]
        assert c["where"]["host"] == host and c["where"]["node_id"] == nodes[host], c["where"]
        if c["device_id"].startswith("phone"):  # the device that answered is the one on that host
            assert c["device"]["soc"] == f"virtual ({host})" and c["emulated"] is True
        else:
            assert c["device"]["os"] != "android" and c["emulated"] is False
    pids = {c["device_id"]: c["where"]["pid"] for c in doc["cells"]}
    assert len(set(pids.values())) == 3, "one actor (process) per device"
    # worker-a's host device and its emulated phone share worker-a's CPU: their cells never time at once
    same_host = sorted(_window(c) for c in doc["cells"] if c["where"]["host"] == "worker-a")
    for (_, end), (start, _) in itertools.pairwise(same_host):
        assert end <= start, "two cells of one host were timing at the same time"
    assert "@ worker-b" in r.stdout  # the final table says where each cell ran


def test_every_ray_process_of_the_cluster_listens_on_loopback_only(lab) -> None:
    """What `mpk agent` started on loopback binds 127.0.0.1 (or ::1) only: Ray 2.60 alone would listen on every
    interface (module docstring of mpk/raycluster.py). Read from the kernel's socket tables."""
    from tests.integration.ray_helpers import descendants, listening_addresses

    cluster: LocalCluster = lab["cluster"]
    pids = [pid for p in cluster.procs.values() if p.poll() is None for pid in (p.pid, *descendants(p.pid))]
    addresses = listening_addresses(pids)
    assert any(a.endswith(f":{cluster.address.rsplit(':', 1)[1]}") for a in addresses), addresses  # the GCS
    assert len(addresses) >= 5, addresses  # GCS, and each node's raylet and object manager at least
    assert all(a.startswith(("127.0.0.1:", "::1:")) for a in addresses), addresses
    import socket

    with socket.create_server(("0.0.0.0", 0)) as s:  # the check sees a socket open to the network
        assert f"0.0.0.0:{s.getsockname()[1]}" in listening_addresses([os.getpid()])


def test_a_host_that_drops_out_fails_only_its_own_cells(lab, driver_env: LocalCluster, tmp_path: Path):
    """worker-b loses power in the middle of its second cell (its agent, node and actor processes and its phone
    SIGKILLed one second into the cell): that cell and the next fail with the reason, worker-a's all finish, and
    results.json on disk is valid after every cell. A device whose host never joined fails too."""
    import threading

    from mpk.contract import validate_results
    from runners.bench import BenchConfig, run_bench

    cluster = driver_env
    devices = yaml.safe_load(lab["devices"].read_text())
    devices["devices"].append({"id": "phone-c", "kind": "android", "serial": "MPK-NOWHERE", "host": "worker-c"})
    devices_yaml = tmp_path / "devices.yaml"
    devices_yaml.write_text(yaml.safe_dump(devices))
    timers: list[threading.Timer] = []
    on_disk: list[int] = []

    def power_cut() -> None:
        cluster.kill("worker-b")
        stop_device_process(lab["phones"]["worker-b"][0])

    def progress(ev: dict) -> None:
        if ev["event"] == "start" and (ev["device"], ev["artifact"]) == ("phone-b", ARTS[1]):
            timers.append(threading.Timer(1.0, power_cut))
            timers[-1].start()
        if ev["event"] == "done":  # the one results.json, rewritten after every cell and valid each time
            [staged] = tmp_path.glob(".out.staging-*/results.json")
            on_disk.append(len(validate_results(json.loads(staged.read_text()))["cells"]))

    t0 = time.monotonic()
    try:
        outcome = run_bench(BenchConfig(manifest=lab["pkg"], out=tmp_path / "out", devices_file=devices_yaml,
                                        ray=cluster.address), progress=progress)  # fmt: skip
    finally:
        for t in timers:
            t.join()
        if not cluster.alive("worker-b"):  # later tests get their cluster back
            cluster.start_agent("worker-b")
    assert timers, "phone-b's second cell never started"
    assert outcome.exit_code == 4
    assert sorted(on_disk) == list(range(1, 13))
    doc = read_results(tmp_path / "out" / "results.json")
    assert doc["complete"] is True
    by = {(c["device_id"], c["artifact_id"]): c for c in doc["cells"]}
    assert all(by[(d, a)]["outcome"] == "ok" for d in ("host-a", "phone-a") for a in ARTS)
    b = [by[("phone-b", a)] for a in ARTS]
    assert b[0]["outcome"] == "ok"
    for c in b[1:]:
        assert c["outcome"] == "infra_error" and "host worker-b dropped out" in c["error"], c["error"]
        assert c["where"]["host"] == "worker-b"
    for a in ARTS:
        c = by[("phone-c", a)]
        assert c["outcome"] == "infra_error" and "no mpk agent for host worker-c" in c["error"], c["error"]
        assert c["where"] == {"host": "worker-c", "node_id": None, "pid": None}
    assert time.monotonic() - t0 < 300


def test_tasks_that_die_or_overrun_are_reported_not_lost(lab, driver_env: LocalCluster):
    """The executor under `mpk tune --ray`: a task whose worker exits, one that raises, one past its time budget
    (killed), and ones that succeed, all in submission order."""
    from mpk.raycluster import connect, disconnect, parse_address
    from packager.compress.tune_ray import run_tasks
    from tests.integration import ray_helpers as h

    connect(parse_address(driver_env.address))
    seen: list[int] = []
    try:
        out = run_tasks(h.dispatch, [("square", 3), ("die", 3), ("fail", "no"), ("sleep_for", 60), ("square", 4)],
                        num_cpus=1, max_concurrent=2, timeout_s=8, on_done=lambda o: seen.append(o.index))  # fmt: skip
    finally:
        disconnect()
    assert h.square(2) == 4  # the helpers are plain functions; the tasks ran them on the workers
    assert [o.status for o in out] == ["ok", "died", "error", "timeout", "ok"], [(o.status, o.error) for o in out]
    assert (out[0].value, out[4].value) == (9, 16)
    assert "ValueError: no" in out[2].error and "killed after 8 s" in out[3].error
    assert sorted(seen) == [0, 1, 2, 3, 4]


def test_tune_on_ray_gives_the_local_trials_front_and_recipe(lab, driver_env: LocalCluster, tmp_path: Path):
    """digits-cnn, prune {0, 0.5} x {fp32, int8}: locally, then each trial as a Ray task on the two workers.

    Everything but the measured latency is identical trial by trial (artifacts byte for byte), and so are the
    chosen trial and the saved recipe. The Pareto front is the same for the same latencies: latency is a
    measurement, and where two trials' latencies tie within noise (here pruned fp32 and int8 differ by ~1 us)
    two local runs can disagree on the front as well. So each run's front is recomputed with the local run's
    latencies, over the floor's metric and over top-1 agreement, and compared."""
    from mpk.raycluster import parse_address
    from packager.compress.distill import DistillConfig
    from packager.compress.tune import TuneConfig, _pareto, run_tune, save_recipe
    from packager.compress.tune_ray import RayTrials

    cfg = TuneConfig(model="digits-cnn", target="channels", amounts=(0.0, 0.5), schemes=("fp32", "int8"),
                     floor={"cosine": 0.85},
                     distill=DistillConfig(epochs=1, samples=128), calibration_count=16, eval_count=32,
                     latency_iters=3)  # fmt: skip
    local = run_tune(cfg, tmp_path / "local", progress=False)
    lines: list[str] = []
    remote = run_tune(cfg, tmp_path / "ray", progress=False, echo=lines.append,
                      executor=RayTrials(parse_address(driver_env.address)))  # fmt: skip
    assert any(ln.startswith("held-out: ") for ln in lines)  # what the floor is checked on, then a line per trial
    assert len([ln for ln in lines if ln.strip().startswith("prune")]) == 4, lines
    same = ("prune", "scheme", "status", "parameters", "size_bytes", "top1_agreement", "accuracy", "cosine",
            "snr_db", "meets_floor")  # fmt: skip
    for lt, rt in zip(local.trials, remote.trials, strict=True):
        assert lt.status == "ok", lt.error
        assert {k: getattr(lt, k) for k in same} == {k: getattr(rt, k) for k in same}
        assert Path(rt.artifact).read_bytes() == Path(lt.artifact).read_bytes()
        assert Path(rt.artifact).relative_to(tmp_path / "ray") == Path(lt.artifact).relative_to(tmp_path / "local")
    assert (remote.chosen.prune, remote.chosen.scheme) == (local.chosen.prune, local.chosen.scheme)
    save_recipe(local, tmp_path / "local.yaml")
    save_recipe(remote, tmp_path / "ray.yaml")
    assert (tmp_path / "ray.yaml").read_bytes() == (tmp_path / "local.yaml").read_bytes()
    for key in ("cosine", "top1_agreement"):
        fronts = []
        for trials in (local.trials, remote.trials):
            copies = [dataclasses.replace(t, latency_ms=lt.latency_ms) for t, lt in zip(trials, local.trials,
                                                                                          strict=True)]  # fmt: skip
            _pareto(copies, key, ("size_bytes", "latency_ms"))
            fronts.append([(t.prune, t.scheme) for t in copies if t.pareto])
        assert fronts[0] == fronts[1] and fronts[0], key


def test_a_bare_ray_flag_runs_on_a_private_instance_that_writes_no_token(tmp_path: Path, monkeypatch) -> None:
    """`mpk tune --ray` without an address: a Ray instance of its own on loopback, with a token of its own that
    only its processes know (Ray 2.60 would write one to ~/.ray/auth_token), gone after disconnect()."""
    from mpk.raycluster import connect, disconnect
    from packager.compress.tune_ray import run_tasks
    from tests.integration import ray_helpers as h

    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    ray = connect(None, num_cpus=1)
    session = Path(ray.get_runtime_context().get_temp_dir())
    try:
        assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) == 64
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        out = run_tasks(h.dispatch, [("square", 5)], num_cpus=1, max_concurrent=1, timeout_s=120)
    finally:
        disconnect()
    assert [(o.status, o.value) for o in out] == [("ok", 25)]
    assert "RAY_AUTH_TOKEN" not in os.environ and not ray.is_initialized()
    assert not (tmp_path / ".ray").exists()
    assert session.name.startswith("mpk-ray-") and not session.exists(), session
