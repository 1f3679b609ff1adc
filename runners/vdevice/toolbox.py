"""What the virtual device's ``/system/bin`` holds: the POSIX tools and the Android ones, handed to each shell.

The shell module knows no command; this table is the one place that puts them
together (``Shell(device, COMMANDS)``), so the shell, the POSIX tools and the
Android tools import in one direction only: shell <- posix, android <- toolbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from runners.vdevice.android import ANDROID_COMMANDS
from runners.vdevice.device import DeviceState
from runners.vdevice.posix import POSIX_COMMANDS
from runners.vdevice.shell import Builtin, Shell

_overlap = set(POSIX_COMMANDS) & set(ANDROID_COMMANDS)
if _overlap:
    raise RuntimeError(f"a command is defined twice: {sorted(_overlap)}")

COMMANDS: Mapping[str, Builtin] = MappingProxyType({**POSIX_COMMANDS, **ANDROID_COMMANDS})


def device_shell(device: DeviceState, *, cwd: str = "/") -> Shell:
    """A fresh shell session on ``device`` with every built-in."""
    return Shell(device, COMMANDS, cwd=cwd)
