"""Facts about the machine that produced a measurement, for the runner result's ``device`` object.

Numbers without the device they came from are not comparable, so every result
carries them: CPU model, cores, governor, max frequencies and temperatures
before/after. For emulated devices ``host_cpu`` names the CPU that really ran.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

_SYS_CPU = Path("/sys/devices/system/cpu")
_THERMAL = Path("/sys/class/thermal")


def cpu_model() -> str:
    """'AMD EPYC 7B13' from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def governor() -> str | None:
    return _read(_SYS_CPU / "cpu0" / "cpufreq" / "scaling_governor")


def max_freqs_khz() -> list[int] | None:
    out = []
    for d in sorted(_SYS_CPU.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        v = _read(d / "cpufreq" / "cpuinfo_max_freq")
        if v and v.isdigit():
            out.append(int(v))
    return out or None


def temperatures_c(root: Path = _THERMAL) -> dict[str, float]:
    """{zone type: degrees C} from /sys/class/thermal (empty in most containers)."""
    temps: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        raw, kind = _read(zone / "temp"), _read(zone / "type") or zone.name
        try:
            value = int(raw) / 1000.0 if raw is not None else None
        except ValueError:
            value = None
        if value is not None and -40 < value < 150:  # drop sensors that report garbage
            key = kind if kind not in temps else f"{kind}.{zone.name}"
            temps[key] = value
    return temps


def int8_facts() -> dict[str, Any]:
    """The CPU features int8 kernels depend on and ONNX Runtime's int8 kernel on them (:mod:`mpk.hostcpu`).

    They travel with every host-CPU number: the same ONNX int8 artifact computes other values on an x86 CPU
    without VNNI (saturating kernel) than on a phone, so its accuracy here is this CPU's, not the artifact's.
    """
    from mpk.hostcpu import int8_kernel, this_cpu

    cpu = this_cpu()
    kernel = int8_kernel(cpu)
    return {"cpu_features": list(cpu.features), "int8_kernel": {"name": kernel.name, "saturates": kernel.saturates}}


def host_facts() -> dict[str, Any]:
    """The ``device`` object for a run on this host (``temperatures_c_*`` filled in by the runner)."""
    model = cpu_model()
    return int8_facts() | {
        "model": model,
        "manufacturer": None,
        "soc": None,
        "abi": platform.machine(),
        "os": platform.system().lower(),
        "os_version": platform.release(),
        "cores": os.cpu_count() or 1,
        "governor": governor(),
        "cpu_max_freq_khz": max_freqs_khz(),
        "host_cpu": model,
        "temperatures_c_before": {},
        "temperatures_c_after": {},
        "battery": None,
    }
