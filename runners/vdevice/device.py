"""State shared by every connection to one virtual device: files, properties, logcat, the benchmark app."""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runners.vdevice.activity import ActivityManager
from runners.vdevice.profile import load_profile
from runners.vdevice.sandbox import SandboxFS

#: logcat keeps the newest entries only, like the ring buffer of a phone
LOGCAT_ENTRIES = 10_000
_THERMAL_TEMP = re.compile(r"/sys/class/thermal/(thermal_zone\d+)/temp")


def default_runner_cmd() -> list[str]:
    """The host runner that stands in for the Android app: same spec in, same result out."""
    return [sys.executable, "-m", "runners.host_runner"]


class DeviceState:
    """``root`` holds the device's filesystem; the benchmark app's private copies live in ``work_dir``
    (default: the sibling ``<root>.activity/``), which no client can reach and which is emptied at start."""

    def __init__(
        self,
        root: Path,
        profile: dict[str, Any] | Path | None = None,
        *,
        runner_cmd: list[str] | None = None,
        runner_timeout: float = 3600.0,
        work_dir: Path | None = None,
        sleep_cap_s: float = 60.0,
        max_output_bytes: int = 64 << 20,
    ) -> None:
        self.fs = SandboxFS(root)
        self.profile = load_profile(profile)
        self.props: dict[str, str] = dict(self.profile["props"])
        self.runner_cmd = list(runner_cmd) if runner_cmd else default_runner_cmd()
        self.sleep_cap_s = sleep_cap_s
        self.max_output_bytes = max_output_bytes
        self._log: collections.deque[tuple[float, str, str, str]] = collections.deque(maxlen=LOGCAT_ENTRIES)
        self._log_lock = threading.Lock()
        self.boot_time = time.time()
        self._populate_sys()
        self.activities = ActivityManager(
            self.fs,
            Path(work_dir) if work_dir else Path(root).resolve().with_name(Path(root).name + ".activity"),
            runner_cmd=self.runner_cmd,
            runner_timeout=runner_timeout,
            log=self.log,
            profile=self.profile,
        )

    # -- logcat -------------------------------------------------------------------------------------------------
    def log(self, tag: str, message: str, level: str = "I") -> None:
        with self._log_lock:
            self._log.append((time.time(), level, tag, message))

    def logcat(self, tags: set[str] | None = None) -> list[str]:
        pid = os.getpid()
        with self._log_lock:
            entries = list(self._log)
        lines = []
        for t, level, tag, msg in entries:
            if tags is not None and tag not in tags:
                continue
            stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
            lines.append(f"{stamp} {pid:5d} {pid:5d} {level} {tag}: {msg}")
        return lines

    def clear_log(self) -> None:
        with self._log_lock:
            self._log.clear()

    # -- /sys and /proc -----------------------------------------------------------------------------------------
    def _populate_sys(self) -> None:
        """Write the fake /sys files once; thermal temps are refreshed from the host on read (see thermal_temp)."""
        root = self.fs.root
        zones = self.host_thermal_zones()
        if not zones:
            zones = [(name, int(float(c) * 1000)) for name, c in self.profile.get("thermal", {}).items()]
        for i, (kind, milli) in enumerate(zones):
            z = root / "sys/class/thermal" / f"thermal_zone{i}"
            z.mkdir(parents=True, exist_ok=True)
            (z / "type").write_text(kind + "\n")
            (z / "temp").write_text(f"{milli}\n")
        cores = int(self.profile.get("cores") or os.cpu_count() or 1)
        max_freq = int(self.profile.get("cpu_max_freq_khz") or 0)
        for c in range(cores):
            d = root / "sys/devices/system/cpu" / f"cpu{c}" / "cpufreq"
            d.mkdir(parents=True, exist_ok=True)
            freq = max_freq or _host_cpu_max_freq(c) or 0
            (d / "scaling_governor").write_text(f"{self.profile.get('governor', 'performance')}\n")
            (d / "cpuinfo_max_freq").write_text(f"{freq}\n")
            (d / "scaling_max_freq").write_text(f"{freq}\n")
        (root / "sys/devices/system/cpu/online").write_text(f"0-{cores - 1}\n")
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        (root / "proc/cpuinfo").write_text(cpuinfo)

    @staticmethod
    def host_thermal_zones() -> list[tuple[str, int]]:
        base = Path("/sys/class/thermal")
        out = []
        for z in sorted(base.glob("thermal_zone*")):
            try:
                out.append((z.joinpath("type").read_text().strip(), int(z.joinpath("temp").read_text().strip())))
            except (OSError, ValueError):
                continue
        return out

    def refresh_thermal(self, android: str) -> None:
        """Before a ``cat`` of ``/sys/class/thermal/thermal_zoneN/temp``: copy the host's live reading of zone N."""
        m = _THERMAL_TEMP.fullmatch(android)
        if not m:
            return
        try:
            reading = (Path("/sys/class/thermal") / m.group(1) / "temp").read_bytes()[:64]
            self.fs.write_bytes(android, reading)
        except OSError:
            pass


def _host_cpu_max_freq(cpu: int) -> int | None:
    try:
        return int(Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq").read_text().strip())
    except (OSError, ValueError):
        return None
