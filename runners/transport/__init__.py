"""Device connections behind one small base class (base.py), chosen by name from TRANSPORTS.

``adb_shell``: adbd directly (TCP/USB) with mpk's own key; ``adb_server``: a
running adb server's host protocol; ``local``: this host. Entries are lazy so
importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any

from mpk.registry import Registry
from runners.transport.base import ShellResult, Transport

TRANSPORTS: Registry[type[Transport]] = Registry("transport", Transport)
TRANSPORTS.register("adb_shell", "runners.transport.adb_shell:AdbShellTransport")
TRANSPORTS.register("adb_server", "runners.transport.adb_server:AdbServerTransport")
TRANSPORTS.register("local", "runners.transport.local:LocalTransport")

__all__ = ["TRANSPORTS", "ShellResult", "Transport", "open_transport"]


def open_transport(name: str, serial: str, *, address: str | None = None, **kwargs: Any) -> Transport:
    """``TRANSPORTS.get(name)(serial, address=..., **kwargs)``; unknown names suggest the nearest."""
    cls = TRANSPORTS.get(name)
    return cls(serial, address=address, **kwargs)
