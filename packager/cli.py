"""``mpk package``, ``mpk inspect``, ``mpk backends``. Thin: parse, build a Recipe, call one function, render.

Heavy imports (torch, executorch, coremltools) happen inside the command
functions, and ``mpk backends`` never imports them at all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def _console(stderr: bool = False):  # rich.console.Console, imported lazily
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (CI logs, tests) gets a wide table instead of rich's 80-column default.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


class RichProgress:
    """Renders pipeline progress on stderr: a spinner while a step runs, then its elapsed time."""

    def __init__(self) -> None:
        self.console = _console(stderr=True)
        self._status: Any = None

    def __call__(self, event: str, text: str, seconds: float | None) -> None:
        if event == "start":
            self._stop()
            self._status = self.console.status(f"{text} ...")
            self._status.start()
        elif event == "done":
            self._stop()
            self.console.print(f"[green]✓[/green] {text} [dim]({seconds:.1f}s)[/dim]")
        elif event == "warn":
            self.console.print(f"[bold red]WARNING:[/bold red] [bold]{text}[/bold]")
        else:
            self.console.print(f"  [dim]{text}[/dim]")

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summary_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """One row per artifact: the numbers a reviewer reads first (also used by ``mpk inspect``)."""
    fp32_size = {a["backend"]: a["size_bytes"] for a in manifest["artifacts"] if a["scheme"] == "fp32"}
    rows = []
    for a in manifest["artifacts"]:
        v = a["verification"]
        m = v.get("metrics") or {}
        base = fp32_size.get(a["backend"])
        ratio = f"{base / a['size_bytes']:.2f}x" if base and a["size_bytes"] else "-"
        d = a.get("delegation")
        deleg = f"{d['fraction'] * 100:.0f}% {d.get('delegate') or ''}".strip() if d else "-"
        agree = _fmt(m.get("top1_agreement"), ".3f")
        if m.get("accuracy") is not None:
            agree += f" / acc {m['accuracy']:.3f} (fp32 {m['fp32_accuracy']:.3f})"
        status = v["status"] + (f": {v['reason']}" if v.get("reason") and v["status"] != "passed" else "")
        rows.append(
            [
                a["backend"],
                a["scheme"],
                f"{a['size_bytes'] / 1e6:.2f}",
                ratio,
                deleg,
                _fmt(m.get("cosine"), ".5f"),
                agree,
                status,
                "cached" if a.get("cached") else "",
            ]
        )
    return rows


def verification_notes(manifest: dict[str, Any]) -> list[str]:
    """Lines under the table: where each artifact's numbers came from, when it was not simply this host's runtime."""
    lines = []
    for a in manifest["artifacts"]:
        v = a["verification"]
        hk = v.get("host_kernel")
        if hk:
            m = hk["metrics"]
            lines.append(
                f"  [dim]{a['id']}: judged on its graph's exact int8 arithmetic (what a phone computes); "
                f"this host's kernel gives cosine {_fmt(m.get('cosine'), '.5f')}, "
                f"top-1 {_fmt(m.get('top1_agreement'), '.3f')} on {hk['cpu']}[/dim]"
            )
        if v.get("warning"):
            lines.append(f"[bold yellow]NOTE:[/bold yellow] {a['id']}: {v['warning']}")
        lines += _quantization_notes(a)
        w = v.get("weights")
        if w:
            worst = w.get("worst_snr_db")
            shown = f", worst layer SNR {worst:.1f} dB" if worst is not None else ""
            state = "ok" if w["ok"] else "FAILED: " + "; ".join(w["problems"])
            lines.append(
                f"  [dim]{a['id']}: stored weights read back and compared with fp32: {w['layers']} "
                f"layers{shown}: {state}[/dim]"
            )
    return lines


def _quantization_notes(a: dict[str, Any]) -> list[str]:
    """Float fallback, the worst layers of an int8 artifact that missed, and what ExecuTorch left undelegated."""
    from packager.export.layer_errors import worst_lines

    details, v, out = a.get("details") or {}, a["verification"], []
    fb = details.get("float_fallback")
    if fb and fb.get("layers"):
        names = ", ".join(layer.get("module") or layer["name"] for layer in fb["layers"][:6])
        more = f" and {len(fb['layers']) - 6} more" if len(fb["layers"]) > 6 else ""
        cost = fb.get("size_cost_bytes", 0) / 1e3
        met = "met" if fb.get("met_tolerance") else "did NOT meet"
        why = f" (search stopped: {fb['stopped']})" if not fb.get("met_tolerance") and fb.get("stopped") else ""
        out.append(
            f"  [dim]{a['id']}: float fallback kept {len(fb['layers'])} layer(s) in float ({names}{more}), "
            f"+{cost:.0f} kB{' (estimated)' if fb.get('size_cost_estimated') else ''}; {met} the tolerance on "
            f"the calibration samples{why}[/dim]"
        )
    elif fb and fb.get("stopped"):  # the search ran but kept nothing (a degenerate reference, no time left)
        out.append(f"  [dim]{a['id']}: float fallback kept no layer in float: {fb['stopped']}[/dim]")
    chosen = (details.get("quantizer") or {}).get("chosen_because")
    if chosen:
        out.append(f"  [dim]{a['id']}: dynamic int8 ({chosen})[/dim]")
    if v["status"] == "failed" and details.get("layer_errors"):
        le = details["layer_errors"]
        out.append(f"  {a['id']}: the five layers that lost most ({le['measured_on']}):")
        out += [f"    {line}" for line in worst_lines(le)]
    d = a.get("delegation") or {}
    if d.get("not_delegated_because"):
        out.append(f"[bold yellow]NOTE:[/bold yellow] {a['id']}: {d['not_delegated_because']}")
    elif d.get("explanation"):
        where = d.get("undelegated_where") or {}
        shown = "; ".join(f"{op} in {', '.join(w)}" for op, w in list(where.items())[:3] if w)
        out.append(f"  [dim]{a['id']}: {d['explanation']}{'. From: ' + shown if shown else ''}[/dim]")
    return out


def render_summary(
    manifest: dict[str, Any], manifest_path: Path | None = None, *, file_problems: dict[str, list[str]] | None = None
) -> None:
    """The artifact table; ``file_problems`` (``mpk inspect``) replaces the verify column of a changed artifact."""
    from rich.table import Table

    con = _console()
    table = Table(title=f"{manifest['model']['name']} ({manifest['model']['sha256'][:12]})")
    for col in ("backend", "scheme", "size MB", "vs fp32", "delegated", "cosine", "top-1 agree", "verify", "cache"):
        table.add_column(col, overflow="fold")
    problems = file_problems or {}
    for a, row in zip(manifest["artifacts"], summary_rows(manifest), strict=True):
        if a["id"] in problems:
            row[7] = "[bold red]NOT AS PACKAGED[/bold red]: " + "; ".join(problems[a["id"]])
        table.add_row(*row)
    if "reference" in problems:
        con.print("[bold red]reference:[/bold red] " + "; ".join(problems["reference"]))
    con.print(table)
    for line in verification_notes(manifest):
        con.print(line)
    for f in manifest["failures"]:
        con.print(f"[bold red]FAILED[/bold red] {f['backend']}/{f['scheme']}: {f['error']}")
    for purpose in ("calibration", "evaluation"):
        d = manifest["data"][purpose]
        if d["synthetic"]:
            con.print(f"[bold red]WARNING:[/bold red] {purpose} data was SYNTHETIC random noise ({d['source']})")
    if manifest_path is not None:
        con.print(f"manifest: {manifest_path}")


@click.command("package")
@click.option("--model", "model", help="Built-in name, path/to/file.py:factory, package.module:factory or file.pt2.")
@click.option("--quantize", "schemes", help="Comma list of schemes: none,int8,int8-dynamic,fp16,palettize4...")
@click.option("--backends", help="Comma list: executorch,onnx,coreml.")
@click.option("--calibration", help="builtin | DIR of images | FILE.npz | file.py:fn | random (synthetic).")
@click.option("--evaluation", help="builtin | DIR | FILE.npz | file.py:fn.")
@click.option("--calibration-count", type=int, help="Calibration samples (default 32).")
@click.option("--eval-count", type=int, help="Evaluation samples (default 96).")
@click.option("--input-shape", "input_shapes", multiple=True, help="NAME:1x3x224x224; a dim may be batch=1..8.")
@click.option("--out", help="Output directory (default mpk-package).")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), help="YAML recipe; flags override it.")
@click.option("--threads", type=int, help="Host runtime threads for verification.")
@click.option("--seed", type=int, help="Seed for anything random (default 0).")
@click.option(
    "--force", is_flag=True, default=None, help="Replace an --out that holds non-mpk files (kept as OUT.prev)."
)
@click.option(
    "--bias-correction/--no-bias-correction",
    default=None,
    help="Static int8 (ExecuTorch, ONNX): correct Conv biases for int8's mean shift on calibration data (default on).",
)
@click.option("--prune", "prune", type=float, help="Prune before export: ratio in [0, 1) (structured: of channels).")
@click.option("--prune-method", type=click.Choice(["structured", "unstructured"]), help="Default structured.")
@click.option(
    "--prune-scope", type=click.Choice(["global", "local"]), help="Rank channels/weights across layers or per layer."
)
@click.option(
    "--prune-target",
    type=click.Choice(["channels", "macs", "params"]),
    help="Structured: what --prune removes (macs/params: allocated by measured per-group sensitivity).",
)
@click.option("--prune-threshold", type=float, help="Unstructured: zero every weight with |w| below this.")
@click.option("--distill-minutes", type=float, help="Distil the pruned model from the original for up to N minutes.")
@click.option(
    "--onnx-reduce-range/--no-onnx-reduce-range",
    "onnx_reduce_range",
    default=None,
    help="ONNX int8: 7-bit weights, computed exactly by x86 CPUs without VNNI too (default off: full 8-bit weights, "
    "exact on phones and VNNI x86, saturating on other x86; README 'int8 on different CPUs').",
)
@click.option(
    "--step-timeout", type=int, help="Seconds one export or verification may take before it is stopped (default 900)."
)
@click.option(
    "--float-fallback",
    type=click.Choice(["auto", "off"]),
    default=None,
    help="int8: keep the worst layers in float until the calibration outputs meet the tolerance (auto; default off).",
)
@click.option(
    "--task",
    type=click.Choice(["classification", "language-model", "segmentation", "other"]),
    default=None,
    help="What the first output decides (top-1 per sample/position/pixel); default: declared or inferred.",
)
@click.option(
    "--no-cache", "no_cache", is_flag=True, default=False, help="Build and verify everything afresh (no cache)."
)
@click.option("--dry-run", is_flag=True, help="Print the resolved recipe as YAML and exit.")
@click.option(
    "--verbose", "-v", is_flag=True, help="Let torch, ExecuTorch, ONNX Runtime and coremltools log and show progress."
)
def package(recipe_file: str | None, dry_run: bool, no_cache: bool, verbose: bool, **flags: Any) -> None:
    """Package a PyTorch model into verified ExecuTorch/ONNX/CoreML artifacts plus a manifest.

    Exit codes: 0 all artifacts passed (CoreML off macOS counts as skipped), 1 a verification
    tolerance was missed, 2 bad flag/recipe/data, 4 output not writable or disk full, 5 a model
    or backend failed to load/export (the other artifacts are still written).
    """
    from packager.recipe import Recipe

    if no_cache:
        flags["cache"] = False
    pruning = {k: flags.pop(k) for k in ("prune", "prune_method", "prune_scope", "prune_target", "prune_threshold")}
    distill_minutes = flags.pop("distill_minutes")
    recipe = Recipe.build(recipe_file, **flags)
    if any(v is not None for v in pruning.values()) or distill_minutes is not None:
        from packager.compress.recipe_io import compression_overrides

        compression = compression_overrides(
            recipe.compression,
            prune=pruning["prune"],
            method=pruning["prune_method"],
            scope=pruning["prune_scope"],
            threshold=pruning["prune_threshold"],
            target=pruning["prune_target"],
            distill_minutes=distill_minutes,
        )
        recipe = recipe.replace(compression=compression)  # validated again, with the recipe's own checks
    if dry_run:
        click.echo(recipe.to_yaml(), nl=False)
        return
    if not verbose:
        quiet_third_party()
    from packager.pipeline import package as run_package

    result = run_package(recipe, progress=RichProgress(), quiet_native=not verbose)
    render_summary(result.manifest, result.manifest_path)
    if result.previous is not None:
        _console().print(f"previous contents of {result.out} kept in {result.previous}")
    result.check()


#: Python loggers of the libraries mpk drives; their failures reach the user as mpk's own one-line errors
THIRD_PARTY_LOGGERS = ("torch", "torchao", "executorch", "coremltools", "onnxruntime", "onnxscript", "onnx_ir", "onnx")


def quiet_third_party() -> None:
    """Keep library chatter off the terminal: it buries mpk's own lines, and a failure already comes back
    as one mpk error line (a corrupt .pt2 made torch log a 15-line traceback first).

    Must run before torch is imported: torch resets its loggers from ``TORCH_LOGS`` at import, so that is
    where it is told ("-all": errors only). A user's own ``TORCH_LOGS``/``TQDM_DISABLE`` is left alone.
    """
    import logging
    import os
    import warnings

    os.environ.setdefault("TORCH_LOGS", "-all")
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' conversion progress bars
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings(
        "ignore", category=UserWarning, module=r"(torch|torchao|executorch|coremltools|onnxscript|onnxruntime)\b.*"
    )
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _find_manifest(path: Path) -> Path | None:
    if path.is_dir() and (path / "manifest.json").is_file():
        return path / "manifest.json"
    if path.is_file() and path.suffix == ".json":
        return path
    return None


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_cmd(path: Path, as_json: bool) -> None:
    """Show a package manifest (table of artifacts) or one artifact (IO spec, size, ops, delegation).

    For a package, every artifact file is checked against the manifest's size and sha256 first: exit 1
    when one is missing or changed (the table says which), 2 when the manifest itself is unreadable.
    """
    manifest_path = _find_manifest(path)
    if manifest_path is not None:
        from mpk.contract import read_manifest
        from mpk.errors import CheckFailed
        from packager.manifest import file_problems

        manifest = read_manifest(manifest_path)
        problems = file_problems(manifest, manifest_path.parent)
        if as_json:
            check = {"ok": not problems, "problems": problems}
            click.echo(json.dumps({**manifest, "file_check": check}, indent=2))
        else:
            render_summary(manifest, manifest_path, file_problems=problems)
        if problems:
            n = sum(len(v) for v in problems.values())
            first = next(iter(problems.values()))[0]
            raise CheckFailed(
                f"{n} file(s) of {manifest_path.parent} do not match the manifest ({first}"
                f"{', ...' if n > 1 else ''}); the package was changed after mpk package wrote it"
            )
        return
    from packager.inspect_artifact import inspect_artifact

    info = inspect_artifact(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    import yaml

    click.echo(yaml.safe_dump(json.loads(json.dumps(info, default=str)), sort_keys=False), nl=False)


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backends(as_json: bool) -> None:
    """List backends, their schemes, and whether this host can run their artifacts. Imports no torch."""
    from packager.export.capabilities import BACKENDS

    if as_json:
        data = {
            name: {
                "suffix": c.suffix,
                "description": c.description,
                "schemes": c.schemes,
                "needs_calibration": sorted(c.needs_calibration),
                "runs_on_this_host": c.can_run_on(sys.platform),
            }
            for name, c in BACKENDS.items()
        }
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    table = Table(title="mpk backends")
    for col in ("backend", "artifact", "scheme", "what it does", "calibration", "host can run"):
        table.add_column(col, overflow="fold")
    for name, c in BACKENDS.items():
        for i, (scheme, desc) in enumerate(c.schemes.items()):
            table.add_row(
                name if i == 0 else "",
                c.suffix if i == 0 else "",
                scheme,
                desc,
                "needed" if scheme in c.needs_calibration else "",
                ("yes" if c.can_run_on(sys.platform) else f"no (needs {c.run_os})") if i == 0 else "",
            )
    _console().print(table)
    _console().print("aliases: none = fp32; pass schemes with --quantize, backends with --backends")
