"""Emulators for benchmarks without a phone: the Android SDK emulator when installed, else mpk's virtual device.

The SDK path boots an AVD headless and waits for ``sys.boot_completed`` over
the adb server. Without an SDK, :func:`start_virtual_device` runs mpk's virtual
adbd (runners/vdevice) as a detached process and records it in the state dir
(``$MPK_STATE_DIR`` or ``~/.local/state/mpk``) so ``mpk emulator stop|list``
find it later. Either way the numbers are the *host's*: results say ``emulated``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mpk.errors import DeviceError, DeviceTimeout, InfraError, UsageError


def state_dir() -> Path:
    if os.environ.get("MPK_STATE_DIR"):
        return Path(os.environ["MPK_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mpk"


def _records_dir() -> Path:
    d = state_dir() / "vdevices"
    d.mkdir(parents=True, exist_ok=True)
    return d


# -- Android SDK emulator -----------------------------------------------------------------------------------------
def sdk_root() -> Path | None:
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        if os.environ.get(var) and Path(os.environ[var]).is_dir():
            return Path(os.environ[var])
    return None


def find_emulator() -> Path | None:
    """The SDK's ``emulator`` binary ($ANDROID_HOME/emulator/emulator, else on PATH)."""
    root = sdk_root()
    if root and (root / "emulator" / "emulator").is_file():
        return root / "emulator" / "emulator"
    found = shutil.which("emulator")
    return Path(found) if found else None


def list_avds() -> list[str]:
    emu = find_emulator()
    if emu is None:
        return []
    try:
        p = subprocess.run([str(emu), "-list-avds"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    # Newer emulators print INFO lines on stdout too; AVD names have no spaces and no '|'.
    return [ln.strip() for ln in p.stdout.splitlines() if ln.strip() and " " not in ln.strip() and "|" not in ln]


def boot_avd(name: str, *, port: int = 5554, timeout: float = 300.0) -> tuple[str, subprocess.Popen]:
    """Boot AVD ``name`` headless on console ``port``; return (serial, process) once ``sys.boot_completed`` is 1."""
    emu = find_emulator()
    if emu is None:
        raise InfraError("no Android SDK emulator found", hint="set ANDROID_HOME, or omit --avd to use mpk's device")
    if name not in list_avds():
        from mpk.registry import suggest

        raise UsageError(suggest(name, list_avds(), "AVD"))
    if port % 2 or not 5554 <= port <= 5682:
        raise UsageError(f"emulator console port must be even and in 5554..5682, got {port}")
    log = _records_dir() / f"avd-{port}.log"
    cmd = [str(emu), "-avd", name, "-port", str(port), "-no-window", "-no-audio", "-no-snapshot"]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    serial = f"emulator-{port}"
    _record(Record(kind="avd", serial=serial, pid=proc.pid, port=port, root=str(log), avd=name))
    wait_for_boot(serial, timeout=timeout, proc=proc, log=log)
    return serial, proc


def wait_for_boot(
    serial: str, *, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    from runners.transport.adb_server import AdbServerTransport

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log else []
            raise DeviceError(serial, f"emulator exited with {proc.returncode}: {' | '.join(tail)}", reason="boot")
        try:
            r = AdbServerTransport(serial, connect=False).shell("getprop sys.boot_completed", timeout=10)
            if r.stdout.strip() == "1":
                return
        except Exception as e:
            last = str(e)
        time.sleep(2)
    raise DeviceTimeout(serial, f"did not finish booting within {timeout:.0f}s ({last})")


# -- mpk's virtual device -------------------------------------------------------------------------------------------
@dataclass
class Record:
    kind: str  # "vdevice" | "avd"
    serial: str
    pid: int
    port: int
    root: str
    avd: str | None = None

    @property
    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _record(rec: Record) -> None:
    (_records_dir() / f"{rec.kind}-{rec.port}.json").write_text(json.dumps(asdict(rec), indent=2))


def running() -> list[Record]:
    """Recorded emulators whose process is still alive; stale records are removed."""
    out = []
    for f in sorted(_records_dir().glob("*.json")):
        try:
            rec = Record(**json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            f.unlink(missing_ok=True)
            continue
        if rec.alive:
            out.append(rec)
        else:
            f.unlink(missing_ok=True)
    return out


def user_adb_key() -> Path | None:
    """The adb client's own public key, as adb finds it: ``$ANDROID_USER_HOME``, ``$ANDROID_SDK_HOME/.android``,
    else ``~/.android`` (``adbkey.pub``). The SDK emulator trusts this key; so does mpk's virtual device."""
    if os.environ.get("ANDROID_USER_HOME"):
        base = Path(os.environ["ANDROID_USER_HOME"])
    elif os.environ.get("ANDROID_SDK_HOME"):
        base = Path(os.environ["ANDROID_SDK_HOME"]) / ".android"
    else:
        base = Path.home() / ".android"
    pub = base / "adbkey.pub"
    return pub if pub.is_file() else None


def keys_to_authorize(extra: list[Path] | tuple[Path, ...] = ()) -> list[Path]:
    """mpk's key, the user's adb key when present, and every ``--authorize FILE``; each checked now, so a
    bad file is one clear UsageError (exit 2) before anything starts."""
    from runners.transport.adbkey import decode_public_key, ensure_key

    keys = [Path(str(ensure_key()) + ".pub")]
    user = user_adb_key()
    keys += [user] if user else []
    for f in extra:
        f = Path(f)
        try:
            text = f.read_text(errors="strict")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--authorize {f}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        try:
            decode_public_key(text)
        except ValueError as e:
            raise UsageError(f"--authorize {f}: not an adb public key (adbkey.pub): {e}") from None
        keys.append(f)
    return list(dict.fromkeys(keys))


def refuse_authorize_for_avd(authorize: list[Path] | tuple[Path, ...]) -> None:
    """The SDK emulator trusts the adb key of the machine it runs on and takes no others from mpk."""
    if authorize:
        raise UsageError(
            "--authorize applies to mpk's virtual device; the SDK emulator trusts this machine's "
            "~/.android/adbkey.pub by itself"
        )


def start_virtual_device(
    *,
    port: int = 0,
    root: Path | None = None,
    profile: Path | None = None,
    timeout: float = 20.0,
    authorize: list[Path] | tuple[Path, ...] = (),
) -> Record:
    """Run ``python -m runners.vdevice serve`` detached; return its record.

    Authorized: mpk's own key, the user's ``~/.android/adbkey.pub`` when it exists (as the SDK emulator
    does, so ``adb connect`` just works), and each file in ``authorize``.
    """
    keys = keys_to_authorize(authorize)
    root = Path(root) if root else state_dir() / "vdevice" / (str(port) if port else f"auto-{os.getpid()}")
    root.mkdir(parents=True, exist_ok=True)
    ready = root / "ready.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "runners.vdevice", "serve", "--port", str(port), "--root", str(root)]
    for pub in keys:
        cmd += ["--authorize", str(pub)]
    cmd += ["--ready-file", str(ready)]
    if profile:
        cmd += ["--profile", str(profile)]
    log = open(root / "vdevice.log", "ab")
    repo = str(Path(__file__).resolve().parents[1])  # so the child imports this tree even from another cwd
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "vdevice.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise InfraError(f"virtual device exited with {proc.returncode}: {' | '.join(tail)}")
        if ready.exists():
            info = json.loads(ready.read_text())
            rec = Record(
                kind="vdevice", serial=f"127.0.0.1:{info['port']}", pid=proc.pid, port=info["port"], root=str(root)
            )
            _record(rec)
            return rec
        time.sleep(0.05)
    proc.kill()
    raise DeviceTimeout("vdevice", f"virtual device did not start within {timeout:.0f}s")


def stop(target: str | None = None, *, timeout: float = 10.0) -> list[Record]:
    """Stop recorded emulators matching ``target`` (serial, port or AVD name; None = all). Returns what stopped."""
    stopped = []
    for rec in running():
        if target not in (None, rec.serial, str(rec.port), rec.avd):
            continue
        try:
            os.killpg(rec.pid, signal.SIGTERM)  # own session: also ends the runner it may be running
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + timeout
        while rec.alive and time.monotonic() < deadline:
            _reap(rec.pid)
            time.sleep(0.05)
        if rec.alive:
            try:
                os.killpg(rec.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _reap(rec.pid)
        (_records_dir() / f"{rec.kind}-{rec.port}.json").unlink(missing_ok=True)
        stopped.append(rec)
    if target is not None and not stopped:
        known = [r.serial for r in running()]
        raise UsageError(f"no running emulator matches {target!r}; running: {', '.join(known) or '(none)'}")
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def ensure_virtual_device(
    root: Path | None = None, *, profile: dict | Path | None = None, runner_cmd: list[str] | None = None
) -> tuple[str, Callable[[], None]]:
    """A virtual device to benchmark on: (serial, stop). For the bench matrix's no-phone fallback.

    Reuses one started by ``mpk emulator start`` when it is running (stop is
    then a no-op: it is not ours to end); otherwise starts one in this process
    with mpk's key authorized, and ``stop`` ends it. Connect with
    ``open_transport("adb_shell", serial)``.
    """
    if root is None and profile is None and runner_cmd is None:
        for rec in running():
            if rec.kind == "vdevice":
                return rec.serial, lambda: None
    import tempfile

    from runners.vdevice.server import VirtualDevice

    root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mpk-vdevice-"))
    vd = VirtualDevice(root, profile=profile, runner_cmd=runner_cmd)
    for pub in keys_to_authorize():
        vd.authorize(pub.read_text())
    vd.start()
    return vd.serial, vd.stop
