"""mpk's virtual Android device: a loopback adbd over a sandboxed filesystem (see server.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runners.vdevice.server import VirtualDevice

__all__ = ["VirtualDevice"]


def __getattr__(name: str):
    if name == "VirtualDevice":
        from runners.vdevice.server import VirtualDevice

        return VirtualDevice
    raise AttributeError(name)
