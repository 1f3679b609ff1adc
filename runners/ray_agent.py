"""``mpk agent``: this host joins a Ray cluster and owns the devices devices.yaml places on it.

The agent is a Ray node of this machine that advertises, for each device whose ``host:`` is this host's
name, the custom resource ``mpk_device:<id>`` (amount 1), and carries the node label ``mpk-host=<name>``.
``mpk bench --ray`` places each device's actor by that resource (:mod:`runners.ray_matrix`), so a device
is driven only from the host it hangs off. The agent runs until it is stopped (Ctrl-C, SIGTERM) or one
of its Ray processes dies; either way it ends every process of its node, and the cells of its devices
that a bench still had in flight fail with the reason while the other hosts' cells go on.

``head=True`` starts the cluster's head here instead, listening at the address (port 0: Ray picks one);
a head may own devices too. On loopback every Ray process binds 127.0.0.1 only (:mod:`mpk.raycluster`).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpk.errors import InfraError, UsageError
from mpk.raycluster import RayAddress, dead_processes, node_address, start_node, stop_node
from runners.config import DevicesConfig
from runners.devices import HOST_NAME, DeviceSpec
from runners.ray_matrix import HOST_LABEL, device_resource


@dataclass(frozen=True)
class AgentConfig:
    address: RayAddress
    host: str
    devices: tuple[DeviceSpec, ...]
    head: bool = False
    num_cpus: int | None = None
    object_store_mb: int | None = None
    temp_dir: str | None = None


def default_host() -> str:
    """This machine's short hostname, the name ``mpk agent`` answers to unless ``--host`` says otherwise."""
    return socket.gethostname().split(".")[0]


def agent_config(config: DevicesConfig | None, address: RayAddress, *, host: str | None = None, head: bool = False,
                 num_cpus: int | None = None, object_store_mb: int | None = None,
                 temp_dir: str | None = None) -> AgentConfig:  # fmt: skip
    """Which devices this host owns; UsageError (exit 2) when the name is malformed, or it owns none and is no head."""
    name = host or default_host()
    if not HOST_NAME.fullmatch(name):
        raise UsageError(f"--host: expected a host name (letters, digits, '.', '_', '-'; at most 63), got {name!r}")
    owned = tuple(d for d in (config.devices if config else []) if d.host == name)
    if not owned and not head:
        known = sorted({d.host for d in config.devices if d.host}) if config else []
        where = config.source if config else "devices.yaml"
        hint = f"hosts there: {', '.join(known)}; pass --host NAME" if known else "give its devices host: NAME"
        raise UsageError(f"{where}: no device has host: {name}, so this agent would own none ({hint})")
    return AgentConfig(address, name, owned, head, num_cpus, object_store_mb, temp_dir)


def run_agent(cfg: AgentConfig, *, ready: Callable[[dict[str, Any]], None] | None = None,
              stop: threading.Event | None = None, poll_s: float = 1.0) -> None:  # fmt: skip
    """Start this host's node and keep it up until ``stop`` is set or a Ray process of it dies (InfraError).

    ``ready`` gets ``{"address", "host", "node_id", "devices", "head"}`` once the node is up.
    """
    stop = stop or threading.Event()
    labels = {HOST_LABEL: cfg.host} if cfg.devices or not cfg.head else {}  # a bare head is no device host
    node = start_node(cfg.address, head=cfg.head, resources={device_resource(d.id): 1 for d in cfg.devices},
                      labels=labels, num_cpus=cfg.num_cpus, object_store_mb=cfg.object_store_mb,
                      temp_dir=cfg.temp_dir)  # fmt: skip
    try:
        if ready:
            ready({"address": node_address(node), "host": cfg.host, "node_id": node.node_id,
                   "devices": [d.id for d in cfg.devices], "head": cfg.head})  # fmt: skip
        while not stop.wait(poll_s):
            dead = dead_processes(node)
            if dead:
                raise InfraError(f"Ray's {', '.join(sorted(set(dead)))} on this host exited; the agent stops and "
                                 "the cells of its devices fail")  # fmt: skip
    finally:
        stop_node(node)


def write_ready(path: Path) -> Callable[[dict[str, Any]], None]:
    """A ``ready`` callback writing the node's facts to ``path`` as JSON (atomically), for scripts and tests."""

    def ready(info: dict[str, Any]) -> None:
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)

    return ready
