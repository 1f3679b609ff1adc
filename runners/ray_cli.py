"""``mpk agent``, and the live table ``mpk bench --ray`` draws. Thin: parse, call :mod:`runners.ray_agent`, render.

Nothing here imports Ray at import time; ``mpk agent`` imports it once it has checked its flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mpk.errors import UsageError


@click.command("agent")
@click.option("--ray", "address", required=True, metavar="HOST:PORT",
              help="The Ray cluster to join; with --head, where to listen (port 0: Ray picks one). Loopback "
                   "unless --ray-allow-remote.")  # fmt: skip
@click.option(
    "--devices",
    "devices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="devices.yaml; this host owns the devices whose host: is its name. Default: ./devices.yaml.",
)
@click.option("--host", help="This host's name in devices.yaml's host: (default: the machine's short hostname).")
@click.option("--head", is_flag=True, help="Start the cluster's head here, listening at --ray, instead of joining.")
@click.option("--ray-allow-remote", is_flag=True,
              help="Allow an address that is not loopback. Whoever reaches a Ray port can run code on every node: "
                   "trusted networks only.")  # fmt: skip
@click.option("--num-cpus", type=click.IntRange(min=0), help="CPUs this node offers mpk tune's trials (default: all).")
@click.option("--object-store-mb", type=click.IntRange(min=76), help="Size of Ray's object store on this node, MiB.")
@click.option(
    "--temp-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Ray's session folder (default: Ray's own, /tmp/ray).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the node's address, host, node id and devices here as JSON once it is up.",
)
def agent(address: str, devices_file: Path | None, host: str | None, head: bool, ray_allow_remote: bool,
          num_cpus: int | None, object_store_mb: int | None, temp_dir: Path | None,
          ready_file: Path | None) -> None:  # fmt: skip
    """Join a Ray cluster as this host and own its devices: those whose host: in devices.yaml is this host.

    `mpk bench --ray` then runs those devices' cells here. Runs until Ctrl-C or SIGTERM, then this host's
    Ray node leaves the cluster (a bench's cells still on its devices fail with the reason). Exit 2 for a
    bad flag, address or devices.yaml, 4 when Ray cannot start or one of its processes dies, 130 on Ctrl-C.
    """
    import signal
    import threading

    from mpk.raycluster import parse_address
    from runners.config import load_devices
    from runners.ray_agent import agent_config, run_agent, write_ready

    addr = parse_address(address, allow_remote=ray_allow_remote, listen=head)
    if devices_file is None and Path("devices.yaml").is_file():
        devices_file = Path("devices.yaml")
    if devices_file is None and not head:
        raise UsageError("--devices FILE is needed: it says which devices this host owns (no ./devices.yaml)")
    config = load_devices(devices_file) if devices_file is not None else None
    cfg = agent_config(config, addr, host=host, head=head, num_cpus=num_cpus, object_store_mb=object_store_mb,
                       temp_dir=str(temp_dir) if temp_dir else None)  # fmt: skip
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def ready(info: dict[str, Any]) -> None:
        if ready_file is not None:
            write_ready(ready_file)(info)
        what = "started the Ray head" if head else "joined the Ray cluster"
        owns = ", ".join(info["devices"]) or "no device"
        click.echo(f"mpk agent {info['host']}: {what} at {info['address']} as node {info['node_id'][:12]}; "
                   f"owns {owns}")  # fmt: skip
        if addr.loopback:
            click.echo("listening on loopback only; Ctrl-C or SIGTERM leaves the cluster")
        else:
            click.echo(click.style("warning: ", fg="yellow", bold=True) + f"Ray listens on every interface here: "
                       f"whoever reaches {info['address']} can run code on this host", err=True)  # fmt: skip

    run_agent(cfg, ready=ready, stop=stop)


# ---------------------------------------------------------------- mpk bench --ray's progress


def _style(state: str) -> str:
    if state.startswith("ok"):
        return "green"
    return {"running": "yellow", "queued": "dim", "skipped": "dim", "not applicable": "dim"}.get(state, "red")


def cell_summary(cell: dict[str, Any]) -> str:
    """What a finished cell shows in the live table: ``ok 1.23 ms`` (p50), else its outcome."""
    stats = (cell.get("result") or {}).get("stats") or {}
    if cell["outcome"] == "ok" and stats.get("p50_ms") is not None:
        return f"ok {stats['p50_ms']:.2f} ms"
    return cell["outcome"].replace("_", " ")


class LiveTable:
    """One live table of the run's cells: a row per host and device, a column per artifact, on stderr.

    Built from the resolved matrix (:func:`runners.bench.plan_bench`); pass it as ``run_bench``'s
    ``progress`` and call :meth:`stop` when the run ends (also on error).
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        self.devices = sorted(plan["devices"], key=lambda d: (d.get("host") or "", plan["devices"].index(d)))
        self.artifacts = [a["id"] for a in plan["artifacts"]]
        self.state = {(d["id"], a): "queued" for d in self.devices for a in self.artifacts}
        self._live: Any = None

    def __call__(self, ev: dict[str, Any]) -> None:
        if ev["event"] == "start":
            self.state[(ev["device"], ev["artifact"])] = "running"
        else:
            cell = ev["cell"]
            self.state[(cell["device_id"], cell["artifact_id"])] = cell_summary(cell)
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self.table(), console=Console(stderr=True), refresh_per_second=4)
            self._live.start()
        else:
            self._live.update(self.table())

    def table(self) -> Any:
        from rich.table import Table

        done = sum(1 for s in self.state.values() if s not in ("queued", "running"))
        table = Table("host", "device", *self.artifacts, title=f"mpk bench --ray: {done}/{len(self.state)} cells")
        for d in self.devices:
            cells = []
            for a in self.artifacts:
                s = self.state[(d["id"], a)]
                cells.append(f"[{_style(s)}]{s}[/]")
            table.add_row(d.get("host") or "-", d["id"], *cells)
        return table

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            if not self._live.console.is_terminal:
                self._live.console.line()  # a terminal gets the newline from Live; a log file does not
            self._live = None
