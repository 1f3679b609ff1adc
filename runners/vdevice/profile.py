"""What the virtual device says it is: system properties and the fake /sys and /proc it shows.

The defaults describe *mpk's virtual device*, never a real phone: the model is
"mpk Virtual Device" and the SoC says it is the host CPU. Numbers measured on it
are host numbers; results mark them ``emulated: true`` with ``host_cpu`` set.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import yaml

from mpk.errors import ConfigError

_ABI = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a", "i686": "x86"}

#: Keys a profile file may have besides ``props``; anything else is a ConfigError.
PROFILE_KEYS = {"props", "battery", "thermal", "governor", "cpu_max_freq_khz", "cores", "packages"}


def host_cpu() -> str:
    """The host CPU model name, e.g. "AMD EPYC 7B13"; what really runs an emulated benchmark."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def default_profile() -> dict[str, Any]:
    machine = platform.machine().lower()
    abi = _ABI.get(machine, machine)
    cores = os.cpu_count() or 1
    return {
        "props": {
            "ro.product.model": "mpk Virtual Device",
            "ro.product.manufacturer": "mpk",
            "ro.product.brand": "mpk",
            "ro.product.name": "mpk_vdevice",
            "ro.product.device": "mpk_vdevice",
            "ro.soc.manufacturer": "host",
            "ro.soc.model": f"virtual ({host_cpu()})",
            "ro.product.cpu.abi": abi,
            "ro.product.cpu.abilist": abi,
            "ro.build.version.release": "14",
            "ro.build.version.sdk": "34",
            "ro.build.type": "userdebug",
            "ro.serialno": "mpkvdevice",
            "ro.kernel.qemu": "1",
            "sys.boot_completed": "1",
            "ro.mpk.emulated": "1",
        },
        "battery": {"level": 100, "temperature": 250, "status": 2, "health": 2, "plugged": 2, "voltage": 4200},
        "thermal": {"cpu": 40.0, "battery": 25.0},
        "governor": "performance",
        "cpu_max_freq_khz": 0,  # 0: read the host's value if it has one
        "cores": cores,
        "packages": {"org.mpk.bench": "/data/app/org.mpk.bench/base.apk"},
    }


def load_profile(source: Path | dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``source`` (a dict, or a JSON/YAML file). Unknown top-level keys are errors."""
    prof = default_profile()
    if source is None:
        return prof
    where = "profile"
    if not isinstance(source, dict):
        where = str(source)
        try:
            text = Path(source).read_text()
            raw = json.loads(text) if str(source).endswith(".json") else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ConfigError(where, [f"cannot read: {e}"]) from None
        source = raw or {}
        if not isinstance(source, dict):
            raise ConfigError(where, ["expected a mapping at the top level"])
    problems = [f"{k}: unknown key (known: {', '.join(sorted(PROFILE_KEYS))})" for k in source if k not in PROFILE_KEYS]
    props = source.get("props", {})
    if not isinstance(props, dict):
        problems.append("props: expected a mapping of property -> value")
        props = {}
    if problems:
        raise ConfigError(where, problems)
    for k, v in source.items():
        if k == "props":
            prof["props"].update({str(pk): str(pv) for pk, pv in props.items()})
        elif isinstance(v, dict) and isinstance(prof.get(k), dict):
            prof[k] = {**prof[k], **v}
        else:
            prof[k] = v
    return prof


def device_facts(profile: dict[str, Any]) -> dict[str, Any]:
    """runner_result ``device`` facts for a run on the virtual device (schema-valid; host_cpu set)."""
    p = profile["props"]
    return {
        "model": p.get("ro.product.model", "mpk Virtual Device"),
        "manufacturer": p.get("ro.product.manufacturer"),
        "soc": p.get("ro.soc.model"),
        "abi": p.get("ro.product.cpu.abi", platform.machine()),
        "os": "android",
        "os_version": p.get("ro.build.version.release"),
        "cores": int(profile.get("cores") or os.cpu_count() or 1),
        "governor": profile.get("governor"),
        "host_cpu": host_cpu(),
    }
