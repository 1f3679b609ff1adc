"""Process memory, with ONE definition across runtimes (see runner_result.schema.json).

peak = VmHWM (the kernel's high-water mark of resident memory), baseline = VmRSS
after the runtime is imported but before the model is loaded, rise = peak - baseline.
The high-water mark is reset by writing "5" to /proc/self/clear_refs (Linux >= 4.0)
right before loading, so the peak covers load + inference only. Where the reset is
refused (some containers), the peak includes the import too; ``source`` says so.
"""

from __future__ import annotations

from pathlib import Path

MB = float(1 << 20)


def _status_kb(field: str, status: Path = Path("/proc/self/status")) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb * 1024 / MB if kb is not None else None


def hwm_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return kb * 1024 / MB if kb is not None else None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS. Returns False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def read_source(reset_ok: bool) -> str:
    return (
        "/proc/self/status VmHWM (reset via clear_refs before load)"
        if reset_ok
        else ("/proc/self/status VmHWM (not resettable here: includes runtime import)")
    )
