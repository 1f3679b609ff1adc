"""The virtual device's benchmark app: what ``am start -n org.mpk.bench/.BenchmarkActivity`` launches.

Like the real app (android_app/, ``BenchmarkActivity.kt``), an activity reads
the spec the client pushed, runs it in the background, writes
``files/mpk/<run_id>/result.json`` and THEN ``DONE`` (``ok`` or
``error: <message>``), and logs ``MPK_DONE`` under the tag ``MpkBench``. ``am
start`` returns once the activity is launched, not when it finishes; mpk polls
DONE and checks the app is still alive (``pidof``) meanwhile.

The benchmark itself is the host runner, so the spec must not become a way out
of the sandbox. Before anything runs:

* the spec is read through the sandbox (at most 1 MiB) and must match the
  runner-spec schema, whose ``additionalProperties: false`` leaves no field we
  do not check;
* ``run_id`` must be a plain name (``[A-Za-z0-9._-]``, no ``..``), since it
  names a folder;
* every path the spec names (artifacts, their extra files, reference tensors)
  must be relative to the spec's folder with no ``..`` component; it is
  resolved through the sandbox (symlink escapes refused) and *copied* into a
  private folder outside the sandbox, which is all the runner ever sees. A
  refusal reads the same whether or not a host file of that name exists, and
  nothing of a host file (existence, size, hash, content) reaches the client.

The runner runs under ``supervisor.py`` in its own process group:
``am force-stop org.mpk.bench`` kills the group at once, and if the device
process itself dies, the supervisor kills it too.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.vdevice.profile import device_facts
from runners.vdevice.sandbox import SandboxEscape, SandboxFS

log = logging.getLogger("mpk.vdevice")

APP_PACKAGE = "org.mpk.bench"
APP_ACTIVITY = "org.mpk.bench/.BenchmarkActivity"
APP_DATA = f"/data/data/{APP_PACKAGE}"
LOG_TAG = "MpkBench"
MAX_SPEC_BYTES = 1 << 20
#: the last this many bytes of the runner's output are kept as files/mpk/<run_id>/runner.log
RUNNER_LOG_BYTES = 1 << 20
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPO = str(Path(__file__).resolve().parents[2])


class SpecRefused(Exception):
    """The spec cannot be run as given; the message goes into DONE."""


def check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise SpecRefused(f"run_id {str(run_id)[:80]!r} must be 1-128 of [A-Za-z0-9._-] and contain no '..'")
    return run_id


def check_relative(path: object, where: str) -> str:
    """A spec path must stay inside the spec's folder: relative, no '..', no NUL (checked before any file access)."""
    if not isinstance(path, str) or not path:
        raise SpecRefused(f"{where}: expected a relative path")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or "\0" in path or ".." in parts or any(p in ("", ".") for p in parts):
        raise SpecRefused(f"{where}: {path[:200]!r} must be a path relative to the spec's folder, without '..'")
    return path


def spec_files(spec: dict[str, Any]) -> list[str]:
    """Every file the spec names, relative to its folder, each checked by :func:`check_relative`."""
    out: list[str] = []
    for i, a in enumerate(spec["artifacts"]):
        out.append(check_relative(a["path"], f"artifacts[{i}].path"))
        for j, e in enumerate(a.get("extra_files") or []):
            out.append(check_relative(e, f"artifacts[{i}].extra_files[{j}]"))
        for kind, p in (a.get("profiling") or {}).items():
            out.append(check_relative(p, f"artifacts[{i}].profiling.{kind}"))
    ref = spec.get("reference") or {}
    for kind in ("inputs", "outputs"):
        for j, t in enumerate(ref.get(kind) or []):
            out.append(check_relative(t["path"], f"reference.{kind}[{j}].path"))
    return list(dict.fromkeys(out))


@dataclass
class Activity:
    run_id: str
    proc: subprocess.Popen[bytes]
    pipe_w: int
    private: Path
    out_dir: str  # Android path of files/mpk/<run_id>
    started: float = field(default_factory=time.monotonic)
    stopped: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class ActivityManager:
    """One benchmark app process at a time, like one app on a phone."""

    def __init__(
        self,
        fs: SandboxFS,
        work_dir: Path,
        *,
        runner_cmd: list[str],
        runner_timeout: float,
        log: Callable[..., None],
        profile: dict[str, Any],
    ) -> None:
        self.fs = fs
        self.work_dir = Path(work_dir)
        self.runner_cmd = runner_cmd
        self.runner_timeout = runner_timeout
        self._logcat = log
        self.profile = profile
        self._lock = threading.Lock()
        self._current: Activity | None = None
        if self.work_dir.exists():  # copies of a previous (killed) device; nothing reads them
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- queries ------------------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        with self._lock:
            a = self._current
        return [a.proc.pid] if a is not None and a.proc.poll() is None else []

    # -- am start ------------------------------------------------------------------------------------------------
    def start(self, spec_path: str, *, force_stop_first: bool = False) -> bool:
        """Launch the activity on ``spec_path`` (Android path). False when one is already running
        (``am`` then says the task was brought to the front, as Android does)."""
        if force_stop_first:
            self.force_stop()
        with self._lock:
            if self._current is not None and not self._current.done.is_set():
                return False
            run_id = _dir_name(spec_path)
            try:
                spec, spec_dir = self._read_spec(spec_path)
                run_id = check_run_id(spec["run_id"])
                out_dir = self._prepare_out(run_id)
                private = self._stage(spec, spec_dir, run_id)
            except (SpecRefused, SandboxEscape, OSError) as e:
                self._refuse(run_id, spec_path, e)
                return True
            self._logcat(LOG_TAG, f"MPK_START run_id={run_id} spec={spec_path}")
            try:
                act = self._launch(run_id, private, out_dir)
            except OSError as e:
                shutil.rmtree(private, ignore_errors=True)
                self._finish_error(out_dir, run_id, f"cannot start runner: {e.strerror or e}")
                return True
            self._current = act
        threading.Thread(target=self._watch, args=(act,), name=f"vdevice-activity-{run_id}", daemon=True).start()
        return True

    def _read_spec(self, spec_path: str) -> tuple[dict[str, Any], str]:
        from mpk.contract import problems as schema_problems

        try:
            raw = self.fs.read_bytes(spec_path, limit=MAX_SPEC_BYTES)
        except SandboxEscape:
            raise SpecRefused(f"spec {spec_path}: Permission denied") from None
        except FileNotFoundError:
            raise SpecRefused(f"spec not found: {spec_path}") from None
        except OSError as e:
            raise SpecRefused(f"spec {spec_path}: {e.strerror or e}") from None
        try:
            spec = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise SpecRefused(f"spec {spec_path} is not JSON: {e}") from None
        problems = schema_problems(spec, "runner_spec")
        if problems:
            raise SpecRefused(f"spec {spec_path} does not match the runner spec schema: {problems[0]}")
        spec_files(spec)  # path checks before any file access
        return spec, self.fs.normalize(spec_path).rsplit("/", 1)[0] or "/"

    def _prepare_out(self, run_id: str) -> str:
        out_dir = f"{APP_DATA}/files/mpk/{run_id}"
        host = self.fs.resolve(out_dir)
        host.mkdir(parents=True, exist_ok=True)
        for name in ("DONE", "result.json"):
            self.fs.resolve(f"{out_dir}/{name}").unlink(missing_ok=True)
        return out_dir

    def _stage(self, spec: dict[str, Any], spec_dir: str, run_id: str) -> Path:
        """Copy what the spec names out of the sandbox into a private folder the runner reads instead."""
        private = self.work_dir / f"{run_id}-{uuid.uuid4().hex[:8]}"
        private.mkdir(parents=True)
        try:
            for rel in spec_files(spec):
                try:
                    fd = self.fs.open_read(f"{spec_dir}/{rel}")
                except SandboxEscape:
                    raise SpecRefused(f"spec names {rel!r}: Permission denied") from None
                except OSError as e:
                    raise SpecRefused(f"spec names {rel!r}: {e.strerror or e}") from None
                with os.fdopen(fd, "rb") as src:
                    self.fs.ensure_space(os.fstat(src.fileno()).st_size)
                    dst = private / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with open(dst, "xb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
            (private / "spec.json").write_text(json.dumps(spec))
            (private / "device_facts.json").write_text(json.dumps(device_facts(self.profile)))
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        return private

    def _launch(self, run_id: str, private: Path, out_dir: str) -> Activity:
        cmd = [
            sys.executable, "-m", "runners.vdevice.supervisor", "--", *self.runner_cmd,
            "--spec", str(private / "spec.json"), "--out", str(private / "result.json"),
            "--emulated", "--device-facts", str(private / "device_facts.json"),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, env.get("PYTHONPATH", "")) if p)
        r, w = os.pipe()
        try:
            with open(private / "runner.log", "wb") as logf:
                proc = subprocess.Popen(cmd, stdin=r, stdout=logf, stderr=subprocess.STDOUT, cwd=private, env=env,
                                        start_new_session=True)  # fmt: skip
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        return Activity(run_id, proc, w, private, out_dir)

    def _watch(self, act: Activity) -> None:
        error: str | None = None
        try:
            try:
                rc = act.proc.wait(timeout=self.runner_timeout)
            except subprocess.TimeoutExpired:
                self._kill(act)
                act.proc.wait()
                error = f"runner timed out after {self.runner_timeout:.0f}s"
                rc = None
            if act.stopped:
                self._logcat("ActivityManager", f"Force stopping {APP_PACKAGE}: run {act.run_id} killed")
                return  # a killed app writes nothing, as on a phone
            logtext = _tail(act.private / "runner.log")
            try:
                self.fs.write_bytes(f"{act.out_dir}/runner.log", logtext)
            except (OSError, SandboxEscape):
                pass
            result = act.private / "result.json"
            if error is None and (rc != 0 or not result.is_file()):
                last = logtext.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {rc}"]
                error = f"runner exited {rc}: {last[0][:500]}"
            if error is None:
                try:
                    self._write_atomic(f"{act.out_dir}/result.json", result.read_bytes())
                except (OSError, SandboxEscape) as e:
                    error = f"cannot write result.json: {e}"
            if error is None:
                self._write_atomic(f"{act.out_dir}/DONE", b"ok\n")
                self._logcat(LOG_TAG, f"MPK_DONE run_id={act.run_id} status=ok")
            else:
                self._finish_error(act.out_dir, act.run_id, error)
        except (OSError, SandboxEscape) as e:
            log.warning("vdevice: activity %s: %s", act.run_id, e)
        finally:
            os.close(act.pipe_w)
            shutil.rmtree(act.private, ignore_errors=True)
            act.done.set()

    # -- am force-stop -------------------------------------------------------------------------------------------
    def force_stop(self, *, wait_s: float = 5.0) -> int:
        """Kill the running activity and everything its runner started; returns how many were running."""
        with self._lock:
            act = self._current
        if act is None or act.done.is_set():
            return 0
        act.stopped = True
        self._kill(act)
        act.done.wait(wait_s)
        return 1

    @staticmethod
    def _kill(act: Activity) -> None:
        try:
            os.killpg(act.proc.pid, signal.SIGKILL)  # the supervisor's group: runner and its children too
        except (ProcessLookupError, PermissionError):
            pass

    # -- DONE ------------------------------------------------------------------------------------------------------
    def _refuse(self, run_id: str, spec_path: str, e: BaseException) -> None:
        if isinstance(e, SandboxEscape):
            msg = f"spec {spec_path}: Permission denied"
        elif isinstance(e, OSError):
            msg = f"spec {spec_path}: {e.strerror or 'I/O error'}"  # never e.filename: a host path
        else:
            msg = str(e)
        try:
            run_id = check_run_id(run_id)
        except SpecRefused:
            run_id = "unknown"
        try:
            out_dir = self._prepare_out(run_id)
        except (OSError, SandboxEscape):
            return
        self._logcat(LOG_TAG, f"MPK_START run_id={run_id} spec={spec_path}")
        self._finish_error(out_dir, run_id, msg)

    def _finish_error(self, out_dir: str, run_id: str, message: str) -> None:
        message = " ".join(message.split())
        try:
            self._write_atomic(f"{out_dir}/DONE", f"error: {message}\n".encode())
        except (OSError, SandboxEscape) as e:
            log.warning("vdevice: cannot write DONE for %s: %s", run_id, e)
        self._logcat(LOG_TAG, f"MPK_DONE run_id={run_id} status=error", "E")

    def _write_atomic(self, android: str, data: bytes) -> None:
        tmp = f"{android}.tmp"
        self.fs.write_bytes(tmp, data)
        os.replace(self.fs.resolve(tmp), self.fs.resolve(android))


def _dir_name(spec_path: str) -> str:
    return SandboxFS.normalize(spec_path).rstrip("/").rsplit("/", 2)[-2] if "/" in spec_path.strip("/") else "unknown"


def _tail(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - RUNNER_LOG_BYTES))
            return f.read()
    except OSError:
        return b""
