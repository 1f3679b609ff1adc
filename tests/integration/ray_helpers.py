"""A real Ray cluster on loopback for the tests: a head and agents started with ``mpk agent``, each agent in a
process group of its own, so one can be killed like a host that loses power, and all are ended afterwards.

Every process gets the same random token (``RAY_AUTH_MODE=token``), so nothing is written to ~/.ray, and short
health-check periods, so the head notices a killed node within seconds. Ray's session folder is a short path
under /tmp (Ray's unix sockets must fit in 107 bytes). Agents start one after another: two nodes starting at
once on one machine race for the same socket names in the session folder.

Also the small functions the Ray task tests run on the workers (importable there as ``tests.integration.ray_helpers``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: GCS health checks every 500 ms, a node declared dead after 4 misses (Ray's defaults take about 30 s)
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
               "RAY_health_check_failure_threshold": "4", "RAY_health_check_initial_delay_ms": "0"}  # fmt: skip


class LocalCluster:
    def __init__(self, root: Path, devices_yaml: Path | None = None) -> None:
        self.root = root
        self.devices_yaml = devices_yaml
        self.temp = Path(tempfile.mkdtemp(prefix="mpkray-", dir="/tmp"))
        self.env = {
            **os.environ,
            **FAST_HEALTH,
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.info: dict[str, dict] = {}
        self.address = ""

    def driver_env(self) -> dict[str, str]:
        """What a driver in this process needs in os.environ to join (monkeypatch these)."""
        return {k: self.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED", *FAST_HEALTH)}

    def _start(self, name: str, args: list[str], timeout: float = 120.0) -> dict:
        ready = self.root / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        log = open(self.root / f"{name}.log", "ab")
        cmd = [sys.executable, "-m", "mpk", "agent", *args, "--temp-dir", str(self.temp), "--ready-file", str(ready)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start: {self.log(name)[-3000:]}")
            time.sleep(0.2)
        self.info[name] = json.loads(ready.read_text())
        return self.info[name]

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def start_head(self) -> str:
        self.address = self._start("head", ["--head", "--ray", "127.0.0.1:0", "--num-cpus", "0",
                                            "--object-store-mb", "80"])["address"]  # fmt: skip
        return self.address

    def start_agent(self, host: str, *, num_cpus: int = 1) -> dict:
        args = ["--ray", self.address, "--host", host, "--num-cpus", str(num_cpus), "--object-store-mb", "80"]
        if self.devices_yaml is not None:
            args += ["--devices", str(self.devices_yaml)]
        return self._start(host, args)

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL an agent and every process under it, as a host losing power would: its node, and the actor
        workers its raylet started (Ray puts those in process groups of their own)."""
        proc = self.procs[name]
        victims = [proc.pid, *descendants(proc.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(30)

    def stop(self) -> None:
        """End every process this cluster started: SIGTERM the agents (workers first), then SIGKILL what is left,
        including actor workers in process groups of their own (found before the agents go, checked by start time
        so a recycled pid is never hit)."""
        names = [n for n in self.procs if n != "head"] + (["head"] if "head" in self.procs else [])
        left = [(pid, _started(pid)) for n in names for pid in descendants(self.procs[n].pid)]
        for n in names:
            if self.alive(n):
                try:
                    os.killpg(self.procs[n].pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for n in names:
            try:
                self.procs[n].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for n in names:
            try:
                os.killpg(self.procs[n].pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.procs[n].wait(10)
        for pid, started in left:
            if started is not None and _started(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.temp, ignore_errors=True)


def _started(pid: int) -> str | None:
    """A process's start time (/proc/PID/stat field 22): with the pid, it names one process, never a recycled pid."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc), children before their own children."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


# -- what the task tests run on the workers -----------------------------------------------------------------------
def square(x: int) -> int:
    return x * x


def die(code: int) -> None:
    os._exit(code)  # a worker that crashes: no exception, no result


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def fail(message: str) -> None:
    raise ValueError(message)


def dispatch(name: str, arg: object) -> object:
    """One task function for all of the above (run_tasks runs one function over many argument tuples)."""
    return globals()[name](arg)


def listening_addresses(pids: list[int]) -> list[str]:
    """The TCP addresses the processes ``pids`` listen on, as ``ip:port`` (Linux /proc/net/tcp and tcp6)."""
    import ipaddress

    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path("/proc") / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # the process is gone
            continue
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:  # closed meanwhile (listdir's own descriptor, in this process)
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    out = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in (Path("/proc/net") / table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = f[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))  # each 32-bit word little-endian
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out.append(f"{ip}:{int(hex_port, 16)}")
    return out
