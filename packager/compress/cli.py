"""``mpk tune``: parse flags into a :class:`~packager.compress.tune.TuneConfig`, call ``run_tune``, render."""

from __future__ import annotations

from pathlib import Path

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
            raise UsageError(f"--floor: expected METRIC=VALUE (e.g. top1_agreement=0.98), got {v!r}")
    return out


@click.command("tune")
@click.option("--model", "model", help="Model spec (built-in name, file.py:factory, .pt2). Required unless --replay.")
@click.option("--backend", default="executorch", show_default=True, help="Backend to export each trial with.")
@click.option("--floor", "floor", multiple=True, help="Accuracy floor METRIC=VALUE (top1_agreement, accuracy, ...).")
@click.option("--prune", "prune", help="Structured prune ratios to try, e.g. 0,0.25,0.5 (0 = unpruned).")
@click.option("--schemes", "schemes", help="Quantization schemes to try, e.g. fp32,int8.")
@click.option("--importance", type=click.Choice(["l1", "l2", "taylor"]), default="l1", show_default=True)
@click.option("--distill-epochs", type=int, default=2, show_default=True, help="Distillation epochs after pruning.")
@click.option("--trial-timeout", type=float, default=600.0, show_default=True, help="Seconds per trial.")
@click.option("--latency-iters", type=int, default=20, show_default=True, help="Timed host runs per trial.")
@click.option("--calibration", default="builtin", show_default=True, help="Calibration/distillation data.")
@click.option("--calibration-count", type=int, default=64, show_default=True)
@click.option("--distill-count", type=int, default=512, show_default=True, help="Samples distillation trains on.")
@click.option("--evaluation", default="builtin", show_default=True, help="Evaluation data (labels give accuracy).")
@click.option("--eval-count", type=int, default=100, show_default=True)
@click.option("--objective", type=click.Choice(["size", "latency"]), default="size", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch and runtime threads.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Keep trial artifacts here (default: temp dir).")
@click.option("--save-recipe", type=click.Path(path_type=Path), help="Write the chosen recipe as YAML.")
@click.option("--replay", type=click.Path(path_type=Path), help="Re-run a saved recipe's single trial.")
@click.option("--json", "as_json", is_flag=True, help="Print the trials as JSON instead of a table.")
@click.option("--ray", "ray", is_flag=False, flag_value="", default=None, metavar="[HOST:PORT]",
              help="Run each trial as a Ray task: on the cluster at HOST:PORT, or alone on a private Ray instance "
                   "here. Loopback unless --ray-allow-remote.")  # fmt: skip
@click.option("--ray-allow-remote", is_flag=True, help="Allow a --ray address that is not loopback (trusted networks).")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="With --ray: trials at once (default: CPUs/threads)")
def tune(**kw: object) -> None:
    """Search prune ratio x scheme under an accuracy floor; print the Pareto front and the chosen recipe.

    Exit codes: 0 a recipe met the floor; 1 no trial met it; 2 bad flags; 4 Ray missing or unreachable;
    5 model error.
    """
    import dataclasses
    import json
    import warnings

    from mpk.errors import CheckFailed
    from packager.compress.distill import DistillConfig
    from packager.compress.tune import TuneConfig, format_result, replay_config, run_tune, save_recipe

    # torch/executorch deprecation chatter would bury the trial lines; errors still surface
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    executor = None
    if kw["ray"] is None and (kw["max_concurrent"] or kw["ray_allow_remote"]):
        raise UsageError("--max-concurrent and --ray-allow-remote apply to --ray only")
    if kw["ray"] is not None:  # checked before any model is loaded; Ray itself is imported only when trials start
        from mpk.raycluster import check_reachable, parse_address
        from packager.compress.tune_ray import RayTrials

        address = parse_address(str(kw["ray"]), allow_remote=bool(kw["ray_allow_remote"])) if kw["ray"] else None
        if address is not None:
            check_reachable(address)  # exit 4 now, not after the model and data are loaded
        executor = RayTrials(address=address, max_concurrent=kw["max_concurrent"])  # type: ignore[arg-type]
    floor = _floor(kw["floor"])  # type: ignore[arg-type]
    prune = _floats(kw["prune"], "prune")  # type: ignore[arg-type]
    schemes = tuple(s.strip() for s in str(kw["schemes"]).split(",") if s.strip()) if kw["schemes"] else None
    common = {
        "threads": kw["threads"],
        "latency_iters": kw["latency_iters"],
        "trial_timeout": kw["trial_timeout"],
        "objective": kw["objective"],
    }
    if kw["replay"]:
        cfg = replay_config(kw["replay"], floor=floor, **common)  # type: ignore[arg-type]
    else:
        if not kw["model"]:
            raise UsageError("--model is required (or --replay FILE)")
        args = {
            "model": kw["model"],
            "backend": kw["backend"],
            "importance": kw["importance"],
            "distill": DistillConfig(epochs=int(kw["distill_epochs"]), samples=int(kw["distill_count"])),  # type: ignore[arg-type]
            "calibration": kw["calibration"],
            "calibration_count": kw["calibration_count"],
            "evaluation": kw["evaluation"],
            "eval_count": kw["eval_count"],
            **common,
        }
        for k, v in (("floor", floor), ("prune", prune), ("schemes", schemes)):
            if v is not None:
                args[k] = v
        cfg = TuneConfig(**args)  # type: ignore[arg-type]
    res = run_tune(cfg, kw["out"], progress=not kw["as_json"], echo=None if kw["as_json"] else click.echo,  # type: ignore[arg-type]
                   executor=executor)  # fmt: skip
    if kw["as_json"]:
        click.echo(
            json.dumps(
                {"trials": [dataclasses.asdict(t) for t in res.trials], "chosen": res.recipe() if res.chosen else None},
                indent=2,
            )
        )
    else:
        click.echo(format_result(res))
    if kw["save_recipe"] and res.chosen:
        save_recipe(res, kw["save_recipe"])  # type: ignore[arg-type]
        click.echo(f"recipe written to {kw['save_recipe']}")
    if res.chosen is None:
        raise CheckFailed("no trial met the accuracy floor")
