"""``mpk emulator start|stop|list``: thin wrappers over runners.emulator."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def emulator() -> None:
    """Start, stop or list emulators and mpk's virtual Android device.

    Without an Android SDK, `start` runs mpk's virtual device: a loopback adbd
    whose benchmarks run on this host's CPU (results say emulated: true).
    """


@emulator.command("list")
def list_cmd() -> None:
    """List SDK AVDs (when an SDK emulator is installed) and running emulators/virtual devices."""
    from runners import emulator as emu

    avds = emu.list_avds()
    click.echo("SDK AVDs: " + (", ".join(avds) if avds else "(no Android SDK emulator found)"))
    recs = emu.running()
    if not recs:
        click.echo("running: (none)")
    for r in recs:
        what = f"AVD {r.avd}" if r.kind == "avd" else f"mpk virtual device, root {r.root}"
        click.echo(f"running: {r.serial}  pid {r.pid}  {what}")


@emulator.command("start")
@click.option("--avd", help="boot this SDK AVD headless (needs ANDROID_HOME); default: mpk's virtual device")
@click.option("--port", type=int, default=0, show_default=True, help="TCP port (0: any free port)")
@click.option("--root", type=click.Path(path_type=Path), help="virtual device storage directory")
@click.option(
    "--profile", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="device profile YAML/JSON"
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds to wait for boot")
@click.option(
    "--authorize",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="also trust this adb public key (repeatable); ~/.android/adbkey.pub is trusted when present",
)
def start_cmd(
    avd: str | None, port: int, root: Path | None, profile: Path | None, timeout: float, authorize: tuple[Path, ...]
) -> None:
    """Start an emulator and print its serial."""
    from runners import emulator as emu

    if avd:
        emu.refuse_authorize_for_avd(authorize)
        serial, _ = emu.boot_avd(avd, port=port or 5554, timeout=timeout)
    else:
        serial = emu.start_virtual_device(port=port, root=root, profile=profile, authorize=authorize).serial
    click.echo(serial)


@emulator.command("stop")
@click.argument("target", required=False)
@click.option("--all", "all_", is_flag=True, help="stop every emulator mpk started")
def stop_cmd(target: str | None, all_: bool) -> None:
    """Stop the emulator TARGET (serial, port or AVD name), or --all."""
    from mpk.errors import UsageError
    from runners import emulator as emu

    if not target and not all_:
        raise UsageError("name the emulator to stop (serial, port or AVD), or pass --all")
    for r in emu.stop(None if all_ else target):
        click.echo(f"stopped {r.serial}")
