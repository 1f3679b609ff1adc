"""The benchmark matrix: every (device, artifact) cell of a manifest, on every device in devices.yaml.

Scheduling rules, and why:

* one thread per device, and a device runs one cell at a time (a phone timing
  two models at once measures neither);
* the host and every emulated device share ONE lock: they all time on this
  machine's CPU, so two of them timing at once would slow each other down;
* between cells a device cools down: until its temperatures are under
  ``thermal_limit_c`` (bounded), or a fixed ``cooldown_s`` pause when it reports none;
* a listed device that is absent is skipped with the reason, or, with
  ``fallback="emulator"`` (or env ``CI`` set), its cells run on mpk's virtual
  Android device and are marked ``emulated: true`` with ``ran_on`` naming the
  virtual device -- never passed off as the real one;
* a device that fails mid-run fails its own cells; the others finish; and
  results.json is rewritten after every cell, so an interrupted run still
  leaves a valid file with what finished.

:class:`Bench` measures one cell (:meth:`Bench.run_cell`); :func:`run_matrix` runs the threads, the
records and the file around it. ``mpk bench --ray`` passes a :class:`Bench` subclass
(:mod:`runners.ray_matrix`) whose cells run, through this same ``run_cell``, on the agent host that
owns each device; the matrix around them is this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mpk.contract import (
    RESULTS_VERSION,
    SPEC_VERSION,
    Cell,
    Manifest,
    Outcome,
    outcome_of,
    read_manifest,
    write_results,
)
from mpk.errors import DeviceError, MpkError, UsageError
from runners.compat import device_runtimes, refuse_incompatible
from runners.config import DevicesConfig
from runners.devices import DeviceSpec, RunSettings
from runners.drivers import Driver, get_driver
from runners.environment import environment
from runners.host_runner import utc_now

Fallback = Literal["emulator", "none"]
ProgressFn = Callable[[dict[str, Any]], None]
VIRTUAL_ID = "mpk-virtual-android"
#: longest wait for a device to cool under thermal_limit_c before timing anyway
MAX_COOLDOWN_S = 120.0
_REF_DTYPES = {"float32", "int64", "int32"}


# ---------------------------------------------------------------- manifest -> specs


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def write_reference(manifest: dict[str, Any], manifest_dir: Path, out_dir: Path) -> dict[str, Any] | None:
    """reference.npz -> raw little-endian ``.bin`` per tensor (the runner spec's ``reference`` object).

    Paths in the returned object are relative to ``out_dir``'s parent's spec dirs, i.e. ``reference/<file>``.
    """
    ref = manifest.get("reference") or {}
    if not ref.get("path") or not (manifest_dir / ref["path"]).exists():
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    with np.load(manifest_dir / ref["path"]) as z:
        arrays = {k: z[k] for k in z.files}

    def entries(prefix: str, specs: list[dict]) -> list[dict]:
        names = [t["name"] for t in specs] or sorted(k[len(prefix) :] for k in arrays if k.startswith(prefix))
        out = []
        for name in names:
            a = arrays[prefix + name]
            if str(a.dtype) not in _REF_DTYPES:
                a = a.astype(np.float32)  # runners read float32/int32/int64 only; fp16 outputs compare fine as fp32
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            fname = f"{prefix.rstrip(':')}_{_safe(name)}.bin"
            a.tofile(out_dir / fname)
            out.append({"name": name, "path": f"reference/{fname}", "shape": list(a.shape[1:]), "dtype": str(a.dtype)})
        return out

    ins, outs = entries("input:", manifest.get("inputs") or []), entries("output:", manifest.get("outputs") or [])
    if not ins or not outs:
        return None
    task = (manifest.get("model") or {}).get("task")
    doc = {"samples": int(arrays["input:" + ins[0]["name"]].shape[0]), "inputs": ins, "outputs": outs}
    if task in ("classification", "language-model", "segmentation", "other"):
        doc["task"] = task
    return doc


def _link(src: Path, dst: Path) -> None:
    """Make ``dst`` point at ``src`` (symlink; copy where links are refused)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        return
    try:
        dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    except OSError:
        import shutil

        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


def build_spec(run_id: str, device_id: str, settings: RunSettings, artifact: dict, reference: dict | None) -> dict:
    """One runner spec for one artifact (paths as in the manifest, relative to the spec dir)."""
    a = {k: artifact[k] for k in ("id", "backend", "scheme", "path", "sha256")}
    a["extra_files"] = [e["path"] if isinstance(e, dict) else e for e in artifact.get("extra_files") or []]
    for k in ("inputs", "outputs"):
        if artifact.get(k):
            a[k] = [{"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]} for t in artifact[k]]
    if artifact.get("runtime"):
        a["runtime"] = artifact["runtime"]  # the apps check it again before loading (runners/compat.py)
    if settings.profile and artifact.get("profiling"):
        a["profiling"] = {k: e["path"] for k, e in artifact["profiling"].items()}
    spec = {"schema_version": SPEC_VERSION, "run_id": run_id, "device_id": device_id,
            "settings": settings.to_spec(), "artifacts": [a], "reference": reference}  # fmt: skip
    return spec


# ---------------------------------------------------------------- the bench


def resolve_fallback(fallback: Fallback | None) -> Fallback:
    """None means: emulate absent devices in CI (env ``CI`` set), skip them elsewhere. Explicit wins."""
    if fallback is not None:
        if fallback not in ("emulator", "none"):
            raise UsageError(f"fallback must be 'emulator' or 'none', got {fallback!r}")
        return fallback
    return "emulator" if os.environ.get("CI", "").lower() not in ("", "0", "false") else "none"


@dataclass(frozen=True)
class Plan:
    """Where one listed device's cells will run."""

    device: DeviceSpec
    #: the device that really runs them (the listed one, or the virtual device); None when skipped
    target: DeviceSpec | None
    emulated: bool
    skip_reason: str | None = None


class Bench:
    """Shared state of one ``mpk bench`` run; ``run_cell`` measures one (device, artifact)."""

    def __init__(
        self,
        manifest_path: Path,
        config: DevicesConfig,
        out_dir: Path,
        *,
        fallback: Fallback | None = None,
        overrides: dict[str, Any] | None = None,
        virtual_factory: Callable[[], tuple[str, Callable[[], None]]] | None = None,
        timeout_s: float = 3600,
        host_lock: AbstractContextManager | None = None,
        run_id: str | None = None,
    ) -> None:
        self.manifest_path = Path(manifest_path).resolve()
        self.manifest: Manifest = read_manifest(self.manifest_path)
        self.manifest_dir = self.manifest_path.parent
        self.config = config
        self.out_dir = Path(out_dir)
        self.work = self.out_dir / "work"
        self.fallback: Fallback = resolve_fallback(fallback)
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        #: held while a cell that times on this machine's CPU runs (the host and every emulated device)
        self.host_lock: AbstractContextManager = host_lock or threading.Lock()
        self.timeout_s = timeout_s
        self._virtual_factory = virtual_factory
        self._virtual: DeviceSpec | None = None
        self._virtual_stop: Callable[[], None] | None = None
        self._virtual_lock = threading.Lock()
        self._drivers: dict[tuple[str, str], Driver] = {}
        self._drivers_lock = threading.Lock()
        self.reference = write_reference(self.manifest, self.manifest_dir, self.work / "reference")
        self.run_id = run_id or time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]

    # -- devices --------------------------------------------------------------------------------------------------
    def settings_for(self, device: DeviceSpec) -> RunSettings:
        s = device.settings(self.config.defaults).override(**self.overrides)
        if s.max_seconds is not None and s.max_seconds < s.min_seconds:
            s = replace(s, max_seconds=s.min_seconds)  # a --min-seconds flag above the YAML cap raises the cap
        return s

    def virtual_device(self) -> DeviceSpec:
        """mpk's virtual Android device, started once per bench and shared (it is one 'phone')."""
        with self._virtual_lock:
            if self._virtual is None:
                factory = self._virtual_factory or _default_virtual_factory()
                serial, stop = factory()
                listed = next((d for d in self.config.devices if d.is_virtual), None)
                vid = listed.id if listed else VIRTUAL_ID
                base = listed or DeviceSpec(id=vid, kind="emulator", runner="android_app", transport="adb_shell")
                self._virtual = replace(base, serial=serial)
                self._virtual_stop = stop
            return self._virtual

    def plan(self, device: DeviceSpec) -> Plan:
        if device.is_virtual:
            try:
                return Plan(device, self.virtual_device(), True)
            except MpkError as e:
                return Plan(device, None, True, f"mpk's virtual device could not start: {e.message}")
        probe = self.driver(device.runner, device.id).probe(device)
        if probe.reachable:
            return Plan(device, device, device.kind == "emulator")
        if self.fallback != "emulator":
            return Plan(device, None, False, f"device absent ({probe.detail}); not emulated (use --fallback emulator)")
        try:
            return Plan(device, self.virtual_device(), True)
        except MpkError as e:
            return Plan(device, None, False, f"device absent ({probe.detail}) and no virtual device: {e.message}")

    def plan_all(self, devices: Iterable[DeviceSpec]) -> dict[str, Plan]:
        """Every device's plan (a device that cannot be planned is skipped with the reason)."""
        return {d.id: _plan_or_skip(self, d) for d in devices}

    def runtimes_of(self, target: DeviceSpec) -> dict[str, str] | None:
        """The runtimes ``target`` reports (:func:`runners.compat.device_runtimes`), for the pre-flight refusal."""
        return device_runtimes(target)

    def extra_config(self) -> dict[str, Any]:
        """What this kind of run adds to results.json's ``config`` (nothing for a run on this machine)."""
        return {}

    def driver(self, name: str, device_id: str) -> Driver:
        """One driver instance per runner and device for the whole run, so :meth:`cancel` reaches every cell in
        flight (a driver tracks the one cell it runs; devices run in parallel)."""
        with self._drivers_lock:
            key = (name, device_id)
            if key not in self._drivers:
                self._drivers[key] = get_driver(name)
            return self._drivers[key]

    def cancel(self) -> None:
        """Kill whatever the drivers still have running (Ctrl-C): no runner goes on timing after mpk stops."""
        with self._drivers_lock:
            drivers = list(self._drivers.values())
        for d in drivers:
            d.cancel()

    def close(self) -> None:
        if self._virtual_stop is not None:
            self._virtual_stop()
            self._virtual_stop = None

    # -- cells ----------------------------------------------------------------------------------------------------
    def artifact(self, artifact_id: str) -> dict:
        for a in self.manifest["artifacts"]:
            if a["id"] == artifact_id:
                return a
        from mpk.registry import suggest

        raise UsageError(suggest(artifact_id, [a["id"] for a in self.manifest["artifacts"]], "artifact"))

    def unmeasured_cell(self, plan: Plan, artifact: dict, reason: str, outcome: Outcome) -> Cell:
        """A cell without a runner result: skipped, not applicable, or an infrastructure error (``outcome``)."""
        ran_on = None if outcome in (Outcome.SKIPPED, Outcome.NOT_APPLICABLE) else getattr(plan.target, "id", None)
        return {"device_id": plan.device.id, "ran_on": ran_on,
                "emulated": plan.emulated, "artifact_id": artifact["id"], "backend": artifact["backend"],
                "scheme": artifact["scheme"], "status": outcome.status, "outcome": str(outcome), "error": reason,
                "device": None, "settings": self.settings_for(plan.device).to_dict(), "runner": None,
                "started_utc": None, "finished_utc": None, "result": None}  # fmt: skip

    def run_cell(self, plan: Plan, artifact: dict) -> dict:
        """Measure one cell on ``plan.target``. Per-artifact failures come back as an error cell;
        DeviceError propagates so the caller can fail the device's remaining cells."""
        if plan.target is None:
            return self.unmeasured_cell(plan, artifact, plan.skip_reason or "skipped", Outcome.SKIPPED)
        target = plan.target
        driver = self.driver(target.runner, target.id)
        if artifact["backend"] not in driver.supported_backends():
            # not a failure: this runner/OS combination simply has no such runtime (CoreML on Android or Linux)
            msg = f"the {target.runner} runner cannot run {artifact['backend']} artifacts"
            return self.unmeasured_cell(plan, artifact, msg, Outcome.NOT_APPLICABLE)
        settings = self.settings_for(plan.device)
        if target.id != plan.device.id and settings.cpu_affinity is not None:
            # a phone's core numbers mean nothing on the virtual device that stands in for it
            settings = replace(settings, cpu_affinity=None)
        cell_id = _safe(f"{self.run_id}-{plan.device.id}-{artifact['id']}")
        spec_dir = self.work / cell_id
        spec_dir.mkdir(parents=True, exist_ok=True)
        extra = [e["path"] if isinstance(e, dict) else e for e in artifact.get("extra_files") or []]
        if settings.profile and artifact.get("profiling"):
            # the op map and ETRecord travel only with a profiling spec; the ETRecord (about 2x the model) only to
            # runners that estimate from it: the host runner, also behind mpk's virtual device
            if target.runner != "host" and target != self._virtual:
                kept = {k: v for k, v in artifact["profiling"].items() if k != "etrecord"}
                artifact = {**artifact, "profiling": kept}
            extra += [e["path"] for e in artifact["profiling"].values()]
        for rel in [artifact["path"], *extra]:
            _link(self.manifest_dir / rel, spec_dir / rel)
        if self.reference:
            _link(self.work / "reference", spec_dir / "reference")
        spec = build_spec(cell_id, plan.device.id, settings, artifact, self.reference)
        shared = target.shares_host_cpu or plan.emulated
        lock = self.host_lock if shared else _NullLock()
        with lock:
            self._cooldown(driver, target, settings)
            started = utc_now()
            try:
                result = driver.run(spec_dir, spec, target, timeout_s=self.timeout_s)
            except DeviceError:
                raise
            except MpkError as e:  # no result at all: the runner died or its result was unusable
                cell = self.unmeasured_cell(plan, artifact, e.message, Outcome.INFRA_ERROR)
                cell.update(started_utc=started, finished_utc=utc_now())
                return cell
            finished = utc_now()
        art = result["artifacts"][0]
        if art.get("profile"):
            self._map_profile(art, artifact, plan)
        err = art.get("error")
        outcome = outcome_of(art)
        exact = int8_exact(artifact, result["device"])
        return {
            "device_id": plan.device.id,
            "ran_on": target.id,
            "emulated": bool(plan.emulated or result["emulated"]),
            "artifact_id": artifact["id"],
            "backend": artifact["backend"],
            "scheme": artifact["scheme"],
            "status": outcome.status,
            "outcome": str(outcome),
            "error": f"{err['kind']}: {err['message']}" if err else None,
            "device": result["device"],
            "settings": {
                **result["settings"],
                "cooldown_s": settings.cooldown_s,
                "thermal_limit_c": settings.thermal_limit_c,
            },
            "runner": result["runner"],
            "started_utc": started,
            "finished_utc": finished,
            "result": art,
            **({} if exact is None else {"int8_exact": exact}),
        }

    def _map_profile(self, art: dict, artifact: dict, plan: Plan) -> None:
        """Put the runner's profile back on the PyTorch source with the package's op map (the same for a profile
        from this host, the virtual device or a phone), and write it as a Chrome trace in ``profiles/``."""
        from mpk.contract.profile import read_opmap, write_trace
        from mpk.profiling import attach_sources

        entry = (artifact.get("profiling") or {}).get("op_map")
        opmap = None
        if entry:
            try:
                opmap = read_opmap(self.manifest_dir / entry["path"])
            except MpkError as e:
                art["profile"].setdefault("notes", []).append(f"op map unreadable: {e.message}")
        attach_sources(art["profile"], opmap)
        if art["profile"].get("ops"):
            name = _safe(f"{plan.device.id}--{artifact['id']}") + ".trace.json"
            emulated = f" (emulated on {plan.target.id})" if plan.emulated and plan.target is not None else ""
            process = f"{plan.device.id}{emulated} / {artifact['id']} ({art['profile']['status']})"
            write_trace(self.out_dir / "profiles" / name, art["profile"], process=process)

    def _cooldown(self, driver: Any, device: DeviceSpec, settings: RunSettings) -> None:
        if settings.cooldown_s <= 0:
            return
        try:
            temps = driver.temperatures(device)
        except MpkError:
            temps = {}
        if not temps or settings.thermal_limit_c is None:
            time.sleep(settings.cooldown_s)
            return
        deadline = time.monotonic() + max(MAX_COOLDOWN_S, settings.cooldown_s)
        while max(temps.values()) >= settings.thermal_limit_c and time.monotonic() < deadline:
            time.sleep(min(2.0, settings.cooldown_s))
            temps = driver.temperatures(device) or {"unknown": 0.0}


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def int8_exact(artifact: dict, device: dict | None) -> bool | None:
    """Whether the CPU that ran an ONNX int8 artifact computed its graph exactly (None: not an ONNX int8 cell).

    False when that CPU's ONNX Runtime int8 kernel adds byte products in saturating 16-bit pairs (x86 without
    VNNI; the runner's device facts say so, mpk/hostcpu.py) and the artifact's weights use the full int8 range
    (the manifest's ``details.quantizer.saturation_safe``; ``mpk package --onnx-reduce-range`` makes it safe).
    Then its measured accuracy is that CPU's, not the artifact's: the gate warns instead of judging it.
    """
    if artifact.get("backend") != "onnx" or not str(artifact.get("scheme", "")).startswith("int8"):
        return None
    kernel = (device or {}).get("int8_kernel") or {}
    if "saturates" not in kernel:
        return None  # a runner that does not report its CPU's kernel: unknown
    safe = bool(((artifact.get("details") or {}).get("quantizer") or {}).get("saturation_safe"))
    return bool(safe or not kernel["saturates"])


def _plan_or_skip(bench: Bench, device: DeviceSpec) -> Plan:
    try:
        return bench.plan(device)
    except MpkError as e:
        return Plan(device, None, False, f"cannot plan: {e.message}")


def _default_virtual_factory() -> Callable[[], tuple[str, Callable[[], None]]]:
    from runners.emulator import ensure_virtual_device

    return ensure_virtual_device


# ---------------------------------------------------------------- the matrix


def _results_doc(bench: Bench, devices_file: str | None, devices: list[DeviceSpec], arts: list[dict],
                 cells: list[Cell]) -> dict:  # fmt: skip
    return {
        "schema_version": RESULTS_VERSION,
        "run_id": bench.run_id,
        "created_utc": utc_now(),
        "finished_utc": None,
        "complete": False,
        "manifest": {
            "path": str(bench.manifest_path),
            "sha256": hashlib.sha256(bench.manifest_path.read_bytes()).hexdigest(),
            "model": bench.manifest.get("model") or {},
        },
        "devices_file": devices_file,
        "config": {
            "fallback": bench.fallback,
            "defaults": bench.config.defaults.to_dict(),
            "overrides": bench.overrides,
            "devices": [d.to_dict() for d in bench.config.devices],
            **bench.extra_config(),
        },
        "environment": environment(),
        "matrix": {"devices": [d.id for d in devices], "artifacts": [a["id"] for a in arts]},
        "cells": cells,
    }


def select(config: DevicesConfig, manifest: Manifest, only_devices: list[str] | None,
           only_artifacts: list[str] | None) -> tuple[list[DeviceSpec], list[dict]]:  # fmt: skip
    """The devices and artifacts a run covers; unknown ids are usage errors with suggestions."""
    from mpk.registry import suggest

    devices = config.devices
    if only_devices:
        devices = [config.get(d) for d in dict.fromkeys(only_devices)]
    arts: list[dict] = list(manifest["artifacts"])
    if only_artifacts:
        known = {a["id"]: a for a in arts}
        missing = [a for a in only_artifacts if a not in known]
        if missing:
            raise UsageError(suggest(missing[0], list(known), "artifact"))
        arts = [known[a] for a in dict.fromkeys(only_artifacts)]
    if not arts:
        raise UsageError("the manifest lists no artifacts to benchmark")
    return devices, arts


def run_matrix(
    manifest_path: Path,
    devices_config: DevicesConfig,
    out_dir: Path,
    *,
    fallback: Fallback | None = None,
    only_devices: list[str] | None = None,
    only_artifacts: list[str] | None = None,
    iterations_override: int | None = None,
    overrides: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    virtual_factory: Callable[[], tuple[str, Callable[[], None]]] | None = None,
    devices_file: str | None = None,
    bench_factory: Callable[..., Bench] = Bench,
) -> dict:
    """Benchmark every selected (device, artifact) cell; write ``out_dir/results.json`` after each and return it.

    ``overrides`` are RunSettings fields (CLI flags) applied over devices.yaml;
    ``iterations_override`` is shorthand for ``overrides={"min_iterations": N}``.
    ``progress`` is called with ``{"event": "start"|"done", "cell": ..., "total": n}``.

    On KeyboardInterrupt the runner processes of the cells in flight are killed, the file is written
    one last time (``complete: false``, the finished cells only) and the interrupt propagates.
    :func:`runners.bench.run_bench` is the whole ``mpk bench`` around this (output folder, exit code).
    ``bench_factory`` makes the :class:`Bench` (called like it): where the cells run.
    """
    ov = dict(overrides or {})
    if iterations_override is not None:
        ov["min_iterations"] = iterations_override
    bench = bench_factory(manifest_path, devices_config, out_dir, fallback=fallback, overrides=ov,
                          virtual_factory=virtual_factory)  # fmt: skip
    try:  # plan every device, then refuse (exit 2) what its runtime cannot load, before anything is pushed
        devices, arts = select(devices_config, bench.manifest, only_devices, only_artifacts)
        plans = bench.plan_all(devices)
        refuse_incompatible(plans.values(), arts, report=bench.runtimes_of)
    except BaseException:
        bench.close()
        raise
    out_path = Path(out_dir) / "results.json"
    cells: list[Cell] = []
    lock = threading.Lock()
    stop = threading.Event()
    total = len(devices) * len(arts)
    doc = _results_doc(bench, devices_file, devices, arts, cells)
    write_results(out_path, doc)

    def record(cell: Cell) -> None:
        with lock:
            if stop.is_set():  # interrupted: a cell whose runner was killed under it measured nothing
                return
            cells.append(cell)
            write_results(out_path, doc)
        if progress:
            progress({"event": "done", "cell": cell, "total": total})

    def worker(device: DeviceSpec) -> None:
        plan = plans[device.id]
        failed: str | None = None
        for art in arts:
            if stop.is_set():
                return
            if failed:
                record(bench.unmeasured_cell(plan, art, failed, Outcome.INFRA_ERROR))
                continue
            if progress:
                progress({"event": "start", "device": device.id, "artifact": art["id"], "total": total})
            try:
                record(bench.run_cell(plan, art))
            except DeviceError as e:
                failed = f"device failed mid-run: {e.message}"
                record(bench.unmeasured_cell(plan, art, failed, Outcome.INFRA_ERROR))
            except Exception as e:  # one device's surprise must not take down the others' cells
                record(bench.unmeasured_cell(plan, art, f"{type(e).__name__}: {e}", Outcome.INFRA_ERROR))

    threads = [threading.Thread(target=worker, args=(d,), name=f"bench-{d.id}", daemon=True) for d in devices]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        doc["complete"] = True
    finally:
        with lock:
            stop.set()
            doc["finished_utc"] = utc_now()
            write_results(out_path, doc)
        bench.cancel()
        bench.close()
    return doc


_SETTING_KEYS = ("warmup_iterations", "min_iterations", "min_seconds", "max_seconds", "threads", "cpu_affinity",
                 "cooldown_s", "thermal_limit_c")  # fmt: skip


def run_cell(
    manifest: Path | str,
    devices: DevicesConfig | Path | str,
    device_id: str,
    artifact_id: str,
    out_dir: Path | None = None,
    *,
    iterations: int | None = None,
    settings: dict[str, Any] | None = None,
    fallback: Fallback = "emulator",
    overrides: dict[str, Any] | None = None,
    virtual_factory: Callable[[], tuple[str, Callable[[], None]]] | None = None,
) -> dict:
    """Measure ONE (device, artifact) cell and return the cell dict; device failures come back as an error cell.

    For re-measuring (the gate's ``--until-conclusive``): pass the old cell's
    ``settings`` to measure under the same settings, and ``iterations=N`` to
    take exactly N timed samples (``min_seconds`` is then 0). ``fallback``
    defaults to "emulator" because a cell whose phone is absent can only have
    been measured on the virtual device; such cells stay marked ``emulated``.
    """
    import tempfile

    config = devices if isinstance(devices, DevicesConfig) else _load_devices(devices)
    ov = {k: v for k, v in (settings or {}).items() if k in _SETTING_KEYS and v is not None}
    if "cpu_affinity" in ov:
        ov["cpu_affinity"] = tuple(ov["cpu_affinity"])
    ov.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if iterations is not None:
        ov.update(min_iterations=int(iterations), min_seconds=0.0)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mpk-cell-")
        out_dir = Path(tmp.name)
    bench = Bench(Path(manifest), config, out_dir, fallback=fallback, overrides=ov, virtual_factory=virtual_factory)
    try:
        device, art = config.get(device_id), bench.artifact(artifact_id)
        plan = bench.plan(device)
        try:
            return bench.run_cell(plan, art)
        except DeviceError as e:
            return bench.unmeasured_cell(plan, art, f"device failed: {e.message}", Outcome.INFRA_ERROR)
    finally:
        bench.close()
        if tmp is not None:
            tmp.cleanup()


def _load_devices(path: Path | str) -> DevicesConfig:
    from runners.config import load_devices

    return load_devices(path)


def describe_plan(manifest_path: Path, devices_config: DevicesConfig, *, fallback: Fallback | None = None,
                  only_devices: list[str] | None = None, only_artifacts: list[str] | None = None,
                  overrides: dict[str, Any] | None = None) -> dict:  # fmt: skip
    """The resolved matrix without running anything (``mpk bench --dry-run``)."""
    manifest = read_manifest(Path(manifest_path))
    devices, arts = select(devices_config, manifest, only_devices, only_artifacts)
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    eff_fallback = resolve_fallback(fallback)
    return {
        "manifest": str(manifest_path),
        "fallback": eff_fallback,
        "devices": [
            {**d.to_dict(), "settings": d.settings(devices_config.defaults).override(**ov).to_dict()} for d in devices
        ],
        "artifacts": [{k: a[k] for k in ("id", "backend", "scheme", "path")} for a in arts],
        "cells": [[d.id, a["id"]] for d in devices for a in arts],
    }


def dump(doc: dict) -> str:
    return json.dumps(doc, indent=1)
