"""``mpk tune``: parse flags into a :class:`~packager.compress.tune.TuneConfig`, call ``run_tune``, render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mpk.errors import UsageError


def _floats(value: str | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--{what}: expected comma-separated numbers, got {value!r}") from None


def _floor(values: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for v in values:
        key, sep, num = v.partition("=")
        try:
            out[key.strip()] = float(num)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--floor: expected METRIC=VALUE (e.g. top1_agreement=0.95), got {v!r}")
    return out


@click.command("tune")
@click.option("--model", "model", help="Model spec (built-in name, file.py:factory, .pt2). Required unless --replay.")
@click.option("--backend", default="executorch", show_default=True, help="Backend to export variants with.")
@click.option(
    "--floor", "floor", multiple=True, help="Floor on held-out data, METRIC=VALUE (default top1_agreement=0.95)."
)
@click.option(
    "--target",
    type=click.Choice(["macs", "params", "channels"]),
    default="macs",
    show_default=True,
    help="What --prune amounts remove: MACs or parameters (searched, allocated by sensitivity), or a uniform "
    "channel ratio (grid).",
)
@click.option("--prune", "prune", help="Amounts to consider, e.g. 0.05,0.1,0.2 (default: a grid up to 0.5).")
@click.option("--schemes", "schemes", help="Schemes to export the result with, e.g. fp32,int8.")
@click.option("--importance", type=click.Choice(["l1", "l2", "taylor", "energy"]), help="Channel score.")
@click.option("--bn", type=click.Choice(["auto", "relative", "absolute", "off"]), default="auto", show_default=True,
              help="BatchNorm re-estimation after pruning (guarded).")  # fmt: skip
@click.option("--refit/--no-refit", default=False, show_default=True, help="Least-squares refit of consumer layers.")
@click.option("--distill-minutes", type=float, help="Distil each variant for up to N minutes (guarded; default: none).")
@click.option("--distill-epochs", type=int, default=None, help="Distillation epochs (with --distill-minutes: 1000).")
@click.option("--distill-data", type=click.Choice(["images", "synthetic", "both"]), default="images", show_default=True)
@click.option("--augment", type=click.Choice(["crop_flip", "strong", "crop", "none"]), default="strong",
              show_default=True, help="Augmentation for distillation.")  # fmt: skip
@click.option("--budget-minutes", type=float, default=20.0, show_default=True, help="Wall-clock budget of the search.")
@click.option("--trial-timeout", type=float, default=600.0, show_default=True, help="Seconds per exported trial.")
@click.option("--latency-iters", type=int, default=20, show_default=True, help="Timed host runs per trial.")
@click.option("--calibration", default="builtin", show_default=True, help="Pruning statistics / recovery data.")
@click.option("--calibration-count", type=int, help="Calibration samples (default: as mpk package).")
@click.option("--distill-count", type=int, help="Samples distillation trains on (default: the calibration set).")
@click.option("--evaluation", default="builtin", show_default=True, help="Guard data: sensitivity and guarded steps.")
@click.option("--eval-count", type=int, help="Guard samples (default: as mpk package).")
@click.option("--held-out", default="builtin", show_default=True, help="Data the floor is checked on (never used "
              "for pruning, BatchNorm or distillation).")  # fmt: skip
@click.option("--objective", type=click.Choice(["size", "latency"]), default="size", show_default=True,
              help="Grid mode: pick the smallest or the fastest artifact meeting the floor.")  # fmt: skip
@click.option("--threads", type=int, default=1, show_default=True, help="Torch and runtime threads.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Keep exported artifacts here (default: temp dir).")
@click.option("--save-recipe", type=click.Path(path_type=Path), help="Write the chosen variant as a recipe (YAML).")
@click.option("--replay", type=click.Path(path_type=Path), help="Re-run a saved recipe (read like mpk package's).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[HOST:PORT]",
              help="Grid (--target channels): run each trial as a Ray task, on the cluster at HOST:PORT or alone on "
                   "a private Ray instance here. Loopback unless --ray-allow-remote.")  # fmt: skip
@click.option("--ray-allow-remote", is_flag=True, help="Allow a --ray address that is not loopback (trusted networks).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="With --ray: trials at once (default: CPUs/threads)")
def tune(**kw: object) -> None:
    """Find how much to prune: the largest MAC (or parameter) reduction whose agreement with fp32 on held-out
    data meets the floor; print every variant tried, the Pareto front and the layers that limited it.

    Exit codes: 0 a variant met the floor; 1 none did; 2 bad flags (``--ray`` with the search or a replay
    included: only a grid's trials are independent); 4 Ray missing or unreachable; 5 model error.
    """
    import json
    import warnings

    from mpk.errors import CheckFailed
    from packager.compress.tune import format_result, result_json, run_tune, save_recipe

    # torch/executorch deprecation chatter would bury the trial lines; errors still surface
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    cfg = tune_config(kw)
    executor = ray_executor(kw, cfg)
    echo = None if kw["as_json"] else click.echo
    res = run_tune(cfg, kw["out"], progress=not kw["as_json"], echo=echo, executor=executor)  # type: ignore[arg-type]
    if kw["as_json"]:
        click.echo(json.dumps(result_json(res), indent=2, default=str))
    else:
        click.echo(format_result(res))
    if kw["save_recipe"] and res.chosen:
        save_recipe(res, kw["save_recipe"])  # type: ignore[arg-type]
        click.echo(f"recipe written to {kw['save_recipe']}")
    if res.chosen is None:
        raise CheckFailed("no variant met the floor on the held-out data")


def ray_executor(kw: dict[str, object], cfg: Any) -> Any:
    """``--ray [HOST:PORT]`` -> a :class:`~packager.compress.tune_ray.RayTrials`, or None. Every refusal comes
    before any model is loaded: exit 2 for misuse, 4 for no cluster at the address (Ray is imported only when
    trials start)."""
    from packager.compress.tune import RAY_GRID_ONLY

    if kw["ray"] is None:
        if kw["max_concurrent"] or kw["ray_allow_remote"]:
            raise UsageError("--max-concurrent and --ray-allow-remote apply to --ray only")
        return None
    from mpk.raycluster import check_reachable, parse_address
    from packager.compress.tune_ray import RayTrials

    address = parse_address(str(kw["ray"]), allow_remote=bool(kw["ray_allow_remote"])) if kw["ray"] else None
    if not cfg.grid:
        raise UsageError(RAY_GRID_ONLY)
    if address is not None:
        check_reachable(address)
    return RayTrials(address=address, max_concurrent=kw["max_concurrent"])  # type: ignore[arg-type]


def tune_config(kw: dict[str, object]):  # -> TuneConfig (torch-free import kept lazy)
    """Flags -> TuneConfig; every bad value is a UsageError/ConfigError (exit 2) before any work."""
    from packager.compress.distill import DistillConfig
    from packager.compress.recovery import RecoveryConfig
    from packager.compress.tune import TuneConfig, replay_config

    floor = _floor(kw["floor"])  # type: ignore[arg-type]
    prune = _floats(kw["prune"], "prune")  # type: ignore[arg-type]
    schemes = tuple(s.strip() for s in str(kw["schemes"]).split(",") if s.strip()) if kw["schemes"] else None
    common = {
        "threads": kw["threads"],
        "latency_iters": kw["latency_iters"],
        "trial_timeout": kw["trial_timeout"],
        "objective": kw["objective"],
        "held_out": kw["held_out"],
        "budget_seconds": float(kw["budget_minutes"]) * 60.0,  # type: ignore[arg-type]
        "floor": floor,
    }
    if kw["replay"]:
        return replay_config(kw["replay"], **common)  # type: ignore[arg-type]
    if not kw["model"]:
        raise UsageError("--model is required (or --replay FILE)")
    distill = None
    minutes = kw["distill_minutes"]
    if minutes is not None or kw["distill_epochs"] is not None or kw["distill_count"] is not None:
        if minutes is not None and not float(minutes) > 0:  # type: ignore[arg-type]
            raise UsageError(f"--distill-minutes must be > 0, got {minutes!r}")
        epochs = kw["distill_epochs"] if kw["distill_epochs"] is not None else (1000 if minutes is not None else 2)
        distill = DistillConfig(
            epochs=int(epochs),  # type: ignore[arg-type]
            max_seconds=float(minutes) * 60.0 if minutes is not None else 600.0,  # type: ignore[arg-type]
            samples=kw["distill_count"],  # type: ignore[arg-type]
            data=kw["distill_data"],  # type: ignore[arg-type]
            augment=kw["augment"],  # type: ignore[arg-type]
        )
    args: dict[str, object] = {
        "model": kw["model"],
        "backend": kw["backend"],
        "target": kw["target"],
        "importance": kw["importance"],
        "recovery": RecoveryConfig(refit=bool(kw["refit"]), bn=kw["bn"]),  # type: ignore[arg-type]
        "distill": distill,
        "calibration": kw["calibration"],
        "evaluation": kw["evaluation"],
        **common,
    }
    for k, v in (
        ("amounts", prune),
        ("schemes", schemes),
        ("calibration_count", kw["calibration_count"]),
        ("eval_count", kw["eval_count"]),
    ):
        if v is not None:
            args[k] = v
    return TuneConfig(**{k: v for k, v in args.items() if v is not None or k == "distill"})  # type: ignore[arg-type]
