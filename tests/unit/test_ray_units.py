"""The parts of mpk's Ray support that need no cluster: addresses and the loopback rule, devices.yaml's host:,
which devices an agent owns, the host-CPU lock across processes, files through the object store (with a dict
standing in for it), the live table. The cluster itself is in tests/integration/test_ray_cluster.py."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mpk.cli import main
from mpk.errors import ConfigError, RunnerError, UsageError
from mpk.raycluster import RayAddress, is_loopback, parse_address
from runners.config import parse_devices
from runners.ray_agent import agent_config
from runners.ray_cli import LiveTable, cell_summary
from runners.ray_matrix import HostCpuLock, Shipped, _why_absent, check_hosts, device_resource, receive, ship

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "host", "port"), [("127.0.0.1:6379", "127.0.0.1", 6379),
                                                    ("localhost:1", "localhost", 1), ("[::1]:6379", "::1", 6379),
                                                    ("127.9.8.7:65535", "127.9.8.7", 65535)])  # fmt: skip
def test_loopback_addresses_are_accepted(text: str, host: str, port: int) -> None:
    a = parse_address(text)
    assert (a.host, a.port, a.loopback) == (host, port, True)
    assert parse_address(str(a)) == a  # str() gives back an address that parses to the same


@pytest.mark.parametrize("text", ["10.0.0.5:6379", "192.168.1.2:6379", "ray-head.lab:6379", "[fe80::1]:6379",
                                  "0.0.0.0:6379"])  # fmt: skip
def test_an_address_off_loopback_is_refused_unless_allowed(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_address(text)
    assert e.value.exit_code == 2 and "\n" not in e.value.format_message()
    assert "not a loopback address" in e.value.message and "--ray-allow-remote" in e.value.message
    assert parse_address(text, allow_remote=True).loopback is False


@pytest.mark.parametrize("text", ["6379", "127.0.0.1:", ":6379", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x",
                                  "ray://127.0.0.1:10001", ""])  # fmt: skip
def test_malformed_addresses_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_port_zero_only_where_ray_listens() -> None:
    assert parse_address("127.0.0.1:0", listen=True).port == 0
    assert not is_loopback("lab-host") and is_loopback("LOCALHOST") and is_loopback("::1")


@pytest.mark.parametrize("argv", [["bench", "{pkg}", "--out", "{out}", "--ray", "10.0.0.5:6379"],
                                  ["tune", "--model", "digits-cnn", "--ray", "10.0.0.5:6379"],
                                  ["agent", "--ray", "10.0.0.5:6379", "--devices", "{devices}"]])  # fmt: skip
def test_every_command_refuses_a_remote_address_in_one_line_and_writes_nothing(argv: list[str], tmp_path: Path):
    """Checked before anything is loaded or written, in a fresh process, which never imports Ray to say so."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [{"id": "h", "kind": "host", "host": "lab-1"}]}))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "manifest.json").write_text("{}")
    args = [a.format(pkg=tmp_path / "pkg" / "manifest.json", out=tmp_path / "out", devices=devices) for a in argv]
    probe = (
        "import sys\nfrom mpk.cli import run\ntry:\n    run(sys.argv[1:])\nfinally:\n"
        "    print('ray imported' if 'ray' in sys.modules else 'ray not imported', file=sys.stderr)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: --ray 10.0.0.5:6379 is not a loopback address"), r.stderr
    assert lines[1:] == ["ray not imported"], r.stderr
    assert not (tmp_path / "out").exists()


def _devices(*devs: dict) -> object:
    return parse_devices({"version": 1, "devices": list(devs)})


def test_devices_yaml_host_is_validated_like_every_key() -> None:
    cfg = _devices({"id": "p", "kind": "android", "serial": "X", "host": "lab-2"}, {"id": "h", "kind": "host"})
    p, h = cfg.devices
    assert p.host == "lab-2" and p.to_dict()["host"] == "lab-2"
    assert h.host is None and "host" not in h.to_dict(), "a device without host: is described as before"
    with pytest.raises(ConfigError) as e:
        _devices({"id": "a", "kind": "host", "host": "lab 2"}, {"id": "b", "kind": "host", "host": 7},
                 {"id": "c", "kind": "host", "hots": "lab-1"},
                 {"id": "d", "kind": "host", "host": "x" * 64})  # fmt: skip
    text = e.value.message
    assert "devices[0].host: expected a host name" in text and "'lab 2'" in text
    assert "devices[1].host: expected a non-empty string, got 7" in text
    assert "devices[2].hots: unknown key; did you mean 'host'?" in text
    assert "devices[3].host: expected a host name" in text


def test_a_ray_run_needs_every_device_placed() -> None:
    cfg = _devices({"id": "p", "kind": "host", "host": "lab-2"}, {"id": "h", "kind": "host"}, {"id": "e",
                   "kind": "emulator"})  # fmt: skip
    check_hosts(cfg.devices[:1])
    with pytest.raises(UsageError, match=r"gives no host: for h, e$"):
        check_hosts(cfg.devices)


def test_an_agent_owns_the_devices_whose_host_is_its_name() -> None:
    cfg = _devices({"id": "p1", "kind": "android", "serial": "A", "host": "lab-2"},
                   {"id": "p2", "kind": "android", "serial": "B", "host": "lab-3"},
                   {"id": "p3", "kind": "emulator", "host": "lab-2"})  # fmt: skip
    addr = RayAddress("127.0.0.1", 6379)
    assert [d.id for d in agent_config(cfg, addr, host="lab-2").devices] == ["p1", "p3"]
    with pytest.raises(UsageError) as e:
        agent_config(cfg, addr, host="lab-9")
    assert "no device has host: lab-9" in e.value.message and "hosts there: lab-2, lab-3" in e.value.message
    assert agent_config(cfg, addr, host="lab-9", head=True).devices == ()  # a head may own nothing
    with pytest.raises(UsageError, match="--host: expected a host name"):
        agent_config(cfg, addr, host="bad name")


def test_why_a_device_has_no_owner_in_the_cluster() -> None:
    cfg = _devices({"id": "p1", "kind": "android", "serial": "A", "host": "lab-2"})
    dev = cfg.devices[0]
    addr = RayAddress("127.0.0.1", 6379)
    node = {"Alive": True, "Labels": {"mpk-host": "lab-2"}, "Resources": {device_resource("p1"): 1.0, "CPU": 2.0}}
    assert _why_absent(dev, [node], addr) is None
    assert "no mpk agent for host lab-2" in _why_absent(dev, [], addr)
    assert "2 agents in the Ray cluster call themselves host lab-2" in _why_absent(dev, [node, node], addr)
    other = {**node, "Resources": {"CPU": 2.0}}
    assert "does not own p1" in _why_absent(dev, [other], addr)


HOLD = """
import sys, time
from pathlib import Path
from runners.ray_matrix import HostCpuLock
lock = HostCpuLock("lab-2", Path(sys.argv[1]))
with lock:
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_the_host_cpu_lock_holds_across_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    """Two processes (two device actors of one host) never hold it at once; a killed holder frees it at once."""
    lock = HostCpuLock("lab-2", tmp_path)
    env = {"PYTHONPATH": str(REPO)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    with lock:
        waited = time.monotonic() - t0
    holder.wait(10)
    assert waited > 0.8, f"acquired after {waited:.2f} s while another process held it"
    other_host = HostCpuLock("lab-3", tmp_path)  # another host's lock is another file: no waiting on it
    killed = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    assert killed.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    with other_host:
        assert time.monotonic() - t0 < 0.5
    killed.kill()
    killed.wait(10)
    t0 = time.monotonic()
    with lock:
        assert time.monotonic() - t0 < 2.0, "a dead holder left the host locked"


def test_files_through_the_object_store_are_checked_on_arrival(tmp_path: Path) -> None:
    """A dict plays Ray's object store (put -> key, get -> bytes); what is checked is mpk's own code."""
    store: dict[int, bytes] = {}

    def put(data: bytes) -> int:
        store[len(store)] = data
        return len(store) - 1

    fetched: list[int] = []

    def get(ref: int) -> bytes:
        fetched.append(ref)
        return store[ref]

    src = tmp_path / "src"
    (src / "model.mlpackage" / "Data").mkdir(parents=True)
    (src / "model.mlpackage" / "Manifest.json").write_text("{}")
    (src / "model.mlpackage" / "Data" / "weights.bin").write_bytes(b"\x00" * 100)
    (src / "model.onnx").write_bytes(b"onnx bytes")
    shipped = ship(src, "model.onnx", put) + ship(src, "model.mlpackage", put) + ship(src, "missing.pte", put)
    assert [s.rel for s in shipped] == ["model.onnx", "model.mlpackage/Data/weights.bin",
                                        "model.mlpackage/Manifest.json"]  # fmt: skip
    dest = tmp_path / "dest"
    receive(dest, shipped, get)
    assert (dest / "model.mlpackage" / "Data" / "weights.bin").read_bytes() == b"\x00" * 100
    assert len(fetched) == 3
    receive(dest, shipped, get)
    assert len(fetched) == 3, "files already there with the right sha256 are not fetched again"
    store[shipped[0].ref[0]] = b"onnx bytez"  # damaged on the way
    (dest / "model.onnx").unlink()
    with pytest.raises(RunnerError, match=r"model\.onnx arrived through Ray's object store with sha256"):
        receive(dest, shipped[:1], get)
    assert not (dest / "model.onnx").exists(), "a damaged file is never written"
    evil = Shipped("../outside", hashlib.sha256(b"x").hexdigest(), 1, [put(b"x")])
    with pytest.raises(RunnerError, match="must stay inside"):
        receive(dest, [evil], get)


def test_the_live_table_shows_cells_by_host_and_device() -> None:
    from rich.console import Console

    plan = {"devices": [{"id": "phone-b", "host": "worker-b"}, {"id": "host-a", "host": "worker-a"}],
            "artifacts": [{"id": "onnx-fp32"}, {"id": "onnx-int8"}]}  # fmt: skip
    live = LiveTable(plan)
    ok = {"device_id": "host-a", "artifact_id": "onnx-fp32", "outcome": "ok", "result": {"stats": {"p50_ms": 1.234}}}
    lost = {"device_id": "phone-b", "artifact_id": "onnx-int8", "outcome": "infra_error", "result": None}
    try:  # the events run_matrix sends
        live({"event": "start", "device": "host-a", "artifact": "onnx-fp32", "total": 4})
        live({"event": "done", "cell": ok, "total": 4})
        live({"event": "start", "device": "phone-b", "artifact": "onnx-fp32", "total": 4})
        live({"event": "done", "cell": lost, "total": 4})
    finally:
        live.stop()
    assert cell_summary(ok) == "ok 1.23 ms" and cell_summary(lost) == "infra error"
    console = Console(record=True, width=120)
    console.print(live.table())
    text = console.export_text()
    rows = [ln for ln in text.splitlines() if "worker-" in ln]
    assert "worker-a" in rows[0] and "ok 1.23 ms" in rows[0] and "queued" in rows[0]  # hosts in order
    assert "worker-b" in rows[1] and "running" in rows[1] and "infra error" in rows[1]
    assert "2/4 cells" in text


def test_until_conclusive_does_not_combine_with_ray(tmp_path: Path) -> None:
    from runners.bench import BenchConfig, run_bench

    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [{"id": "h", "kind": "host", "host": "lab-1"}],
                                       "budgets": [{"device": "h", "p50_ms": 5}]}))  # fmt: skip
    with pytest.raises(UsageError, match="does not combine with --ray"):
        run_bench(BenchConfig(manifest=tmp_path / "m.json", out=tmp_path / "out", devices_file=devices,
                              until_conclusive=True, ray="127.0.0.1:6379"))  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_agent_help_and_refusals_need_no_ray(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["agent", "--help"])
    assert r.exit_code == 0 and "--ray-allow-remote" in r.output and "--head" in r.output
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [{"id": "h", "kind": "host", "host": "lab-1"}]}))
    r = CliRunner().invoke(main, ["agent", "--ray", "127.0.0.1:6379", "--devices", str(devices), "--host", "lab-2"])
    assert r.exit_code == 2 and "no device has host: lab-2" in r.output


def test_no_cluster_at_the_address_is_exit_4_before_anything_is_loaded(tmp_path: Path) -> None:
    """Port 1 on loopback: nothing listens there (a real refused connection, no Ray needed to find out)."""
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"version": 1, "devices": [{"id": "h", "kind": "host", "host": "lab-1"}]}))
    (tmp_path / "m.json").write_text("{}")
    for argv in (["bench", str(tmp_path / "m.json"), "--devices", str(devices), "--out", str(tmp_path / "out"),
                  "--ray", "127.0.0.1:1"],
                 ["tune", "--model", "digits-cnn", "--target", "channels", "--ray", "127.0.0.1:1"]):  # fmt: skip
        r = CliRunner().invoke(main, argv)
        assert r.exit_code == 4, r.output
        assert "no Ray cluster answers at 127.0.0.1:1" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [[], ["--target", "params"], ["--replay", "{recipe}"]])
def test_tune_ray_with_the_search_or_a_replay_is_refused_in_one_line(extra: list[str], tmp_path: Path) -> None:
    """The search is sequential (bisection) and a replay is one variant: --ray is refused (exit 2) before any
    model is loaded or Ray imported, never silently run locally."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": "digits-cnn", "compression": {"structured": {"ratio": 0.25}}}))
    args = [a.format(recipe=recipe) for a in extra]
    argv = ["tune", *(args if "--replay" in args else ["--model", "digits-cnn", *args]), "--ray", "127.0.0.1:1"]
    probe = (
        "import sys\nfrom mpk.cli import run\ntry:\n    run(sys.argv[1:])\nfinally:\n"
        "    print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)\n"
        "    print('ray imported' if 'ray' in sys.modules else 'ray not imported', file=sys.stderr)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: --ray runs the independent trials of a grid (--target channels)"), r.stderr
    assert lines[1:] == ["torch not imported", "ray not imported"], r.stderr


def test_ray_only_flags_without_ray_are_usage_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["tune", "--model", "digits-cnn", "--max-concurrent", "2"])
    assert r.exit_code == 2 and "apply to --ray only" in r.output
    r = CliRunner().invoke(main, ["bench", str(tmp_path / "m.json"), "--out", str(tmp_path / "o"),
                                  "--ray-allow-remote", "--devices", str(REPO / "devices.yaml")])  # fmt: skip
    assert r.exit_code == 2 and "--ray-allow-remote applies to --ray only" in r.output, r.output
