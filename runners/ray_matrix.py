"""``mpk bench --ray``: the device matrix across hosts, each cell run by the Ray actor that owns its device.

How a run goes:

* ``mpk agent --ray ADDRESS --host lab-2`` on each host with devices joins the Ray cluster as a node that
  advertises one custom resource per device whose ``host:`` in devices.yaml is ``lab-2``
  (``mpk_device:<id>``, amount 1) and the node label ``mpk-host=lab-2`` (:mod:`runners.ray_agent`);
* ``mpk bench --ray ADDRESS``, on a machine of the cluster, makes one :class:`DeviceOwner` actor per device,
  each requiring its device's resource: Ray can place it only on the host that owns the device, one at a time;
* each actor holds a :class:`runners.matrix.Bench` on its host and measures the device's cells with the same
  :meth:`~runners.matrix.Bench.run_cell` as a run on one machine; the matrix around them (a thread per device,
  the records, results.json rewritten after every cell, progress) is :func:`runners.matrix.run_matrix`, on
  the bench's machine, with :class:`RayBench` as its bench;
* the manifest, its reference tensors and each artifact travel through Ray's object store: put once by the
  bench, fetched by each host that needs them, sha256-checked on arrival (:func:`receive`);
* the host-CPU lock holds per host: the host's and the emulated devices' cells of one host take a file lock
  named after the host (:class:`HostCpuLock`), so two actors on one host never time at the same time;
* a host that drops out (its agent, its node or the actor dies) fails its own devices' remaining cells with
  the reason; the other hosts' cells finish. Every cell says where it ran: ``where`` = host, Ray node, pid.

Every selected device needs a ``host:``; a device whose host has no agent in the cluster is an
``infra_error`` (the user said it is there), not a skipped absent phone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpk import __version__
from mpk.contract import Cell, Outcome
from mpk.errors import DeviceError, MpkError, RunnerError, UsageError
from mpk.files import sha256_file
from mpk.raycluster import RayAddress, connect, disconnect
from runners.config import DevicesConfig
from runners.devices import DeviceSpec
from runners.host_runner import utc_now
from runners.matrix import Bench, Fallback, Plan

RESOURCE_PREFIX = "mpk_device:"
#: the node label naming an agent's host
HOST_LABEL = "mpk-host"
#: how long the actors of all devices may take to start and plan (a virtual device may start with one)
PLAN_TIMEOUT_S = 180.0
#: how much longer than a cell's own timeout the bench waits for a host's answer before it gives the host up
ANSWER_MARGIN_S = 300.0


def device_resource(device_id: str) -> str:
    """The Ray resource an agent advertises for a device it owns: ``mpk_device:pixel-7``."""
    return RESOURCE_PREFIX + device_id


def check_hosts(devices: Iterable[DeviceSpec]) -> None:
    """UsageError (exit 2) naming every device without ``host:``: a Ray run places each device on its host."""
    missing = [d.id for d in devices if d.host is None]
    if missing:
        raise UsageError(f"--ray runs each device's cells on the agent of its host; devices.yaml gives no host: "
                         f"for {', '.join(missing)}")  # fmt: skip


class HostCpuLock:
    """One host's host-CPU lock, across processes: an exclusive ``flock`` on a file named after the host.

    Each device's actor is a process of its own, so a threading lock cannot keep two of them from timing at
    once; the kernel drops a flock when its holder dies, so a killed actor never leaves the host locked.
    """

    def __init__(self, host: str, directory: Path | None = None) -> None:
        if directory is None:
            from runners.emulator import state_dir

            directory = state_dir() / "locks"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"hostcpu-{host}.lock"
        self._held = threading.local()

    def __enter__(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self._held.fd = self._held.fd, None
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- files through the object store


@dataclass(frozen=True)
class Shipped:
    """One file of the package in Ray's object store. ``ref`` holds the ObjectRef inside a list, so Ray hands
    the actor the reference (fetched only when the file is not there yet) instead of the bytes."""

    rel: str
    sha256: str
    size: int
    ref: list = field(compare=False)


def ship(root: Path, rel: str, put: Callable[[bytes], Any]) -> list[Shipped]:
    """The file ``root/rel`` (every file under it, for a folder such as an .mlpackage) put into the object store.
    A missing file ships nothing: the runner then fails the cell for it, as it does on one machine."""
    path = root / rel
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    out = []
    for f in files:
        data = f.read_bytes()
        out.append(Shipped(f.relative_to(root).as_posix(), hashlib.sha256(data).hexdigest(), len(data), [put(data)]))
    return out


def receive(root: Path, files: Iterable[Shipped], get: Callable[[Any], bytes]) -> None:
    """Write each shipped file under ``root`` unless it is there already; RunnerError when the bytes that arrive
    are not the bytes that were sent (their sha256 differs), so a damaged artifact is never measured."""
    base = root.resolve()
    for f in files:
        dest = (root / f.rel).resolve()
        if base not in dest.parents:
            raise RunnerError(f"{f.rel}: a shipped file must stay inside the package folder")
        if dest.is_file() and dest.stat().st_size == f.size and sha256_file(dest) == f.sha256:
            continue
        data = get(f.ref[0])
        digest = _sha256(data)
        if digest != f.sha256:
            raise RunnerError(f"{f.rel} arrived through Ray's object store with sha256 {digest}, sent as {f.sha256}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the actor, on the device's host


class DeviceOwner:
    """The Ray actor that owns one device on its host for one run: its cells run here, with a Bench of its own.

    Answers are values, never exceptions, so nothing of mpk's error classes has to survive Ray's pickling:
    ``("cell", cell)``; ``("device", device_id, message)`` for a DeviceError (the device is gone: its other
    cells fail too); ``("infra", message)`` when a file did not arrive intact.
    """

    def __init__(self, host: str, run_id: str, package: list[Shipped], manifest_rel: str, config: DevicesConfig,
                 fallback: Fallback, overrides: dict[str, Any], timeout_s: float) -> None:  # fmt: skip
        import ray

        from runners.emulator import state_dir

        cells = state_dir() / "ray-cells"  # a killed actor leaves its folder here, not scattered over /tmp
        cells.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=cells))
        self.package = self.root / "package"
        receive(self.package, package, ray.get)
        self.bench = Bench(self.package / manifest_rel, config, self.root / "out", fallback=fallback,
                           overrides=overrides, timeout_s=timeout_s, host_lock=HostCpuLock(host),
                           run_id=run_id)  # fmt: skip
        self.where = {"host": host, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def hello(self) -> dict[str, Any]:
        return {"where": self.where, "mpk_version": __version__}

    def plan(self, device: DeviceSpec) -> tuple[Plan, dict[str, str] | None]:
        plan = self.bench.plan_all([device])[device.id]
        return plan, self.bench.runtimes_of(plan.target) if plan.target is not None else None

    def run_cell(self, plan: Plan, artifact_id: str, files: list[Shipped]) -> tuple:
        import ray

        try:
            receive(self.package, files, ray.get)
        except MpkError as e:
            return ("infra", e.message)
        try:
            return ("cell", self.bench.run_cell(plan, self.bench.artifact(artifact_id)))
        except DeviceError as e:
            return ("device", e.device, e.message)

    def cancel(self) -> None:
        self.bench.cancel()

    def close(self) -> None:
        try:
            self.bench.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- the bench's side


@dataclass
class _Owner:
    actor: Any
    host: str
    where: dict[str, Any]


class RayBench(Bench):
    """A :class:`~runners.matrix.Bench` whose cells run on the actors that own their devices (module docstring).

    Made by :func:`runners.matrix.run_matrix` like a Bench (``bench_factory=partial(RayBench, address=...)``);
    it connects to the cluster when made and disconnects in :meth:`close`.
    """

    def __init__(self, manifest_path: Path, config: DevicesConfig, out_dir: Path, *, address: RayAddress,
                 plan_timeout_s: float = PLAN_TIMEOUT_S, **kw: Any) -> None:  # fmt: skip
        super().__init__(manifest_path, config, out_dir, **kw)
        self.address = address
        self.plan_timeout_s = plan_timeout_s
        self.ray = connect(address)
        self._lock = threading.Lock()
        self._owners: dict[str, _Owner] = {}
        #: device id -> why no host runs its cells
        self._absent: dict[str, str] = {}
        self._shipped: dict[str, list[Shipped]] = {}
        self._runtimes: dict[int, dict[str, str] | None] = {}

    def extra_config(self) -> dict[str, Any]:
        hosts = {d.id: d.host for d in self.config.devices if d.host is not None}
        return {"ray": {"address": str(self.address), "hosts": hosts}}

    # -- planning: one actor per device, all started at once ----------------------------------------------------
    def plan_all(self, devices: Iterable[DeviceSpec]) -> dict[str, Plan]:
        devices = list(devices)
        check_hosts(devices)
        ray = self.ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        package = self._package()
        owner_cls = ray.remote(DeviceOwner)
        pending: dict[str, tuple[Any, Any, Any]] = {}
        for d in devices:
            why = _why_absent(d, nodes, self.address)
            if why:
                self._absent[d.id] = why
                continue
            actor = owner_cls.options(resources={device_resource(d.id): 1}, num_cpus=0, max_concurrency=4,
                                      max_restarts=0, max_task_retries=0).remote(
                d.host, self.run_id, package, self.manifest_path.name, self.config, self.fallback, self.overrides,
                self.timeout_s)  # fmt: skip
            pending[d.id] = (actor, actor.hello.remote(), actor.plan.remote(d))
        deadline = time.monotonic() + self.plan_timeout_s
        plans: dict[str, Plan] = {}
        for d in devices:
            if d.id not in pending:
                plans[d.id] = Plan(d, None, False, self._absent[d.id])
                continue
            actor, hello, plan_ref = pending[d.id]
            try:
                hi, (plan, runtimes) = ray.get([hello, plan_ref], timeout=max(1.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                why = (f"host {d.host} did not start the device's actor within {self.plan_timeout_s:.0f} s "
                       "(another mpk bench may be using the device)")  # fmt: skip
            except ray.exceptions.RayError as e:
                why = f"host {d.host} could not take the device: {_ray_reason(e)}"
            else:
                why = None
                if hi["mpk_version"] != __version__:
                    why = f"host {d.host} runs mpk {hi['mpk_version']}, this bench mpk {__version__}"
            if why:
                self._absent[d.id] = why
                ray.kill(actor)
                plans[d.id] = Plan(d, None, False, why)
                continue
            self._owners[d.id] = _Owner(actor, d.host or "", hi["where"])
            self._runtimes[id(plan.target)] = runtimes
            plans[d.id] = plan
        return plans

    def runtimes_of(self, target: DeviceSpec) -> dict[str, str] | None:
        return self._runtimes.get(id(target))

    # -- cells --------------------------------------------------------------------------------------------------
    def unmeasured_cell(self, plan: Plan, artifact: dict, reason: str, outcome: Outcome) -> Cell:
        cell = super().unmeasured_cell(plan, artifact, reason, outcome)
        cell["where"] = self._where(plan.device)
        return cell

    def run_cell(self, plan: Plan, artifact: dict) -> dict:
        ray = self.ray
        owner = self._owners.get(plan.device.id)
        if owner is None:  # its host is not in the cluster: the user said the device is there, so not "skipped"
            why = self._absent.get(plan.device.id) or plan.skip_reason or "no host owns it"
            return self.unmeasured_cell(plan, artifact, why, Outcome.INFRA_ERROR)
        started = utc_now()
        ref = owner.actor.run_cell.remote(plan, artifact["id"], self._ship(artifact))
        try:
            answer = ray.get(ref, timeout=self.timeout_s + ANSWER_MARGIN_S)
        except ray.exceptions.GetTimeoutError:
            raise DeviceError(plan.device.id, f"host {owner.host} gave no answer within "
                              f"{self.timeout_s + ANSWER_MARGIN_S:.0f} s", reason="timeout") from None  # fmt: skip
        except ray.exceptions.RayTaskError as e:  # mpk's own code failed on the host: this cell only
            cell = self.unmeasured_cell(plan, artifact, f"on host {owner.host}: {_ray_reason(e)}",
                                        Outcome.INFRA_ERROR)  # fmt: skip
            cell.update(started_utc=started, finished_utc=utc_now())
            return cell
        except ray.exceptions.RayError as e:  # the actor, its worker or its node died, or could not be reached
            if isinstance(e, ray.exceptions.ActorUnavailableError) and self._answers(owner):
                cell = self.unmeasured_cell(plan, artifact, f"on host {owner.host}: the cell's answer was lost "
                                            f"({_ray_reason(e)})", Outcome.INFRA_ERROR)  # fmt: skip
                cell.update(started_utc=started, finished_utc=utc_now())
                return cell
            raise DeviceError(plan.device.id, f"host {owner.host} dropped out of the Ray cluster "
                              f"({_ray_reason(e)})", reason="host-lost") from None  # fmt: skip
        if answer[0] == "device":
            _, device_id, message = answer
            raise DeviceError(device_id, message.removeprefix(f"device {device_id}: "))
        if answer[0] == "infra":
            cell = self.unmeasured_cell(plan, artifact, f"on host {owner.host}: {answer[1]}", Outcome.INFRA_ERROR)
            cell.update(started_utc=started, finished_utc=utc_now())
            return cell
        cell = answer[1]
        cell["where"] = dict(owner.where)
        return cell

    def cancel(self) -> None:
        for owner in list(self._owners.values()):
            try:
                owner.actor.cancel.remote()
            except Exception:  # a dead actor has nothing left to cancel
                pass

    def close(self) -> None:
        ray = self.ray
        owners = list(self._owners.values())
        self._owners.clear()
        try:
            closing = [o.actor.close.remote() for o in owners]
            ray.wait(closing, num_returns=len(closing), timeout=30)
            for o in owners:
                ray.kill(o.actor)
        except Exception:  # a host that is gone has nothing to close; never mask what the run found
            pass
        finally:
            disconnect()
            super().close()

    # -- helpers ------------------------------------------------------------------------------------------------
    def _answers(self, owner: _Owner, timeout_s: float = 10.0) -> bool:
        """Whether a host whose actor could not be reached a moment ago answers now (a glitch, not a dead host)."""
        try:
            self.ray.get(owner.actor.hello.remote(), timeout=timeout_s)
            return True
        except Exception:
            return False

    def _where(self, device: DeviceSpec) -> dict[str, Any]:
        owner = self._owners.get(device.id)
        return dict(owner.where) if owner else {"host": device.host or "", "node_id": None, "pid": None}

    def _package(self) -> list[Shipped]:
        """The manifest and its reference tensors, which every actor needs before it can plan."""
        files = ship(self.manifest_dir, self.manifest_path.name, self.ray.put)
        ref = (self.manifest.get("reference") or {}).get("path")
        return files + (ship(self.manifest_dir, ref, self.ray.put) if ref else [])

    def _ship(self, artifact: dict) -> list[Shipped]:
        """An artifact's files in the object store, put once for every host that runs it."""
        with self._lock:
            if artifact["id"] not in self._shipped:
                extra = [e["path"] if isinstance(e, dict) else e for e in artifact.get("extra_files") or []]
                self._shipped[artifact["id"]] = [s for rel in [artifact["path"], *extra]
                                                 for s in ship(self.manifest_dir, rel, self.ray.put)]  # fmt: skip
            return self._shipped[artifact["id"]]


def _why_absent(device: DeviceSpec, nodes: list[dict[str, Any]], address: RayAddress) -> str | None:
    """Why no agent in the cluster can own ``device`` (None when exactly one can)."""
    mine = [n for n in nodes if (n.get("Labels") or {}).get(HOST_LABEL) == device.host]
    if not mine:
        return (f"no mpk agent for host {device.host} is in the Ray cluster at {address} (on that host: "
                f"mpk agent --ray {address} --host {device.host})")  # fmt: skip
    if len(mine) > 1:
        return f"{len(mine)} agents in the Ray cluster call themselves host {device.host}; stop all but one"
    if device_resource(device.id) not in (mine[0].get("Resources") or {}):
        return f"the agent of host {device.host} does not own {device.id} (its devices.yaml gives it another host)"
    return None


def _ray_reason(e: BaseException) -> str:
    """One line out of a Ray exception (whose text is a traceback or a paragraph)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, MpkError):
        return cause.message
    if isinstance(cause, BaseException) and cause is not e:
        return _ray_reason(cause)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    head = next((ln for ln in lines if not ln.startswith(("Traceback", "File ", "ray::"))), "")
    return f"{type(e).__name__}: {head}"[:140].rstrip(": ")
