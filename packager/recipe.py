"""The packaging recipe: one frozen config object from YAML, CLI flags and Python kwargs.

Flags override YAML; kwargs passed to :meth:`Recipe.build` are the flags. Every
problem is collected and reported together with its path, and an unknown key
is an error (a misspelt ``tolerances`` key must not silently loosen a check)::

    recipe.yaml: backendz: unknown key; did you mean 'backends'?
    recipe.yaml: tolerances.int8.min_cosin: unknown tolerance; did you mean 'min_cosine'?

Backend and scheme names are checked against :mod:`packager.export.capabilities`
(no torch import), so ``coreml`` + ``int8-dynamic`` is refused in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mpk.errors import ConfigError, UnknownNameError, UsageError
from mpk.registry import suggest
from mpk.yamlio import load_yaml

if TYPE_CHECKING:  # pragma: no cover
    from packager.compress.recipe_io import CompressionConfig

DEFAULT_BACKENDS = ("executorch", "onnx")
_TASKS = ("classification", "language-model", "segmentation", "other")
DEFAULT_SCHEMES = ("none", "int8")


@dataclass(frozen=True)
class Recipe:
    """What to package and how. ``schemes`` are user spellings ("none", "int8"); each backend resolves them."""

    model: str
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    calibration: str = "builtin"
    evaluation: str = "builtin"
    calibration_count: int = 32
    eval_count: int = 96
    #: ``name:1x3x224x224`` strings; a dim may be dynamic ``batch=1..8``
    input_shapes: tuple[str, ...] = ()
    #: scheme -> {tolerance key: value}, merged over verify.DEFAULT_TOLERANCES
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)
    #: image preprocessing override: resize_shorter, mean, std (0..255 units)
    preprocess: dict[str, Any] | None = None
    out: str = "mpk-package"
    seed: int = 0
    cache: bool = True
    force: bool = False
    threads: int | None = None
    #: samples stored in reference.npz for on-device checks
    reference_samples: int = 16
    #: pruning / distillation / QAT / mixed precision applied before export, parsed once here from the YAML
    #: mapping (packager/compress/recipe_io.py); None when there is nothing to apply
    compression: CompressionConfig | None = None
    #: static int8 (executorch, onnx): correct Conv biases for int8's mean shift (packager/export/*bias_correction.py)
    bias_correction: bool = True
    #: ONNX int8: 7-bit weights (ONNX Runtime's ``reduce_range``), which x86 CPUs without VNNI compute exactly;
    #: full 8-bit weights are right for phones and VNNI x86 and lose accuracy there (mpk/hostcpu.py)
    onnx_reduce_range: bool = False
    #: int8 (executorch, onnx): "auto" keeps the worst layers in float until the calibration outputs meet the
    #: tolerance (packager/export/layer_errors.py); "off" quantizes what the backend's policy quantizes
    float_fallback: str = "off"
    #: seconds one export or verification may take before it is stopped and reported (0: no limit)
    step_timeout: int = 900
    #: what the first output decides (top-1 agreement per sample, per position, per pixel; mpk/metrics.py), or
    #: "other"; None: the model's own ``mpk_task`` attribute, else inferred from its outputs
    task: str | None = None

    def __post_init__(self) -> None:
        compression, problems = _parse_compression(self.compression)
        problems += _validate(self)
        if problems:
            raise ConfigError("recipe", problems)
        object.__setattr__(self, "compression", compression)
        from packager.export.capabilities import ALIASES

        # tolerances are looked up by canonical scheme; "none:" in YAML means fp32
        canon = {ALIASES.get(k.lower(), k.lower()): dict(v) for k, v in self.tolerances.items()}
        object.__setattr__(self, "tolerances", canon)

    # -- construction ----------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Any, source: str = "recipe") -> Recipe:
        """Build from a parsed YAML mapping; every unknown key and bad value is reported with its path."""
        if not isinstance(raw, dict):
            raise ConfigError(source, [f"expected a mapping at the top level, got {type(raw).__name__}"])
        names = [f.name for f in dataclasses.fields(cls)]
        problems = [f"{k}: unknown key" + _nearest(str(k), names) for k in raw if k not in names]
        kwargs = {k: _coerce(k, v) for k, v in raw.items() if k in names}
        if "model" not in kwargs:
            problems.append("model: required")
        try:
            # built even when keys are unknown, so the user sees every problem in one go
            recipe = cls(**{"model": "?", **kwargs})
        except ConfigError as e:
            problems.extend(e.problems)
        except TypeError as e:
            problems.append(str(e))
        if problems:
            raise ConfigError(source, problems)
        return recipe

    @classmethod
    def build(cls, recipe_file: str | Path | None = None, **overrides: Any) -> Recipe:
        """YAML file (optional) overridden by ``overrides``; a None override means "not given"."""
        raw: dict[str, Any] = {}
        source = "recipe"
        if recipe_file is not None:
            path = Path(recipe_file)
            source = str(path)
            raw = load_yaml(path, what="recipe file") or {}  # exit 2 on unreadable, non-UTF-8, bad or duplicate keys
            if not isinstance(raw, dict):
                raise ConfigError(source, ["expected a mapping at the top level"])
        merged = dict(raw)
        for k, v in overrides.items():
            if v is not None and v != ():
                merged[k] = v
        return cls.from_dict(merged, source)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    # -- views -----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in ("backends", "schemes", "input_shapes"):
            d[k] = list(d[k])
        d["tolerances"] = {k: dict(v) for k, v in self.tolerances.items()}
        d["preprocess"] = dict(self.preprocess) if self.preprocess is not None else None
        d["compression"] = self.compression.to_dict() if self.compression is not None else None
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def combinations(self) -> list[tuple[str, str]]:
        """(backend, canonical scheme) pairs in order, duplicates dropped ("none" and "fp32" are one)."""
        from packager.export.capabilities import resolve_scheme

        seen: list[tuple[str, str]] = []
        for b in self.backends:
            for s in self.schemes:
                pair = (b, resolve_scheme(b, s))
                if pair not in seen:
                    seen.append(pair)
        return seen


def _nearest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce(key: str, value: Any) -> Any:
    """Comma strings and lists become tuples for the list-valued fields (the CLI passes strings)."""
    if key in ("backends", "schemes", "input_shapes"):
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v] if key != "input_shapes" else [value]
        if isinstance(value, (list, tuple)):
            return tuple(str(v).strip() if key != "input_shapes" else v for v in value)
    return value


def _parse_compression(raw: Any) -> tuple[CompressionConfig | None, list[str]]:
    """The ``compression:`` section as a typed config (the one parse of it), or None when it asks for nothing."""
    if raw is None:
        return None, []
    from packager.compress.recipe_io import CompressionConfig, parse_compression

    if isinstance(raw, CompressionConfig):
        return (None if raw.empty else raw), []
    try:
        cfg = parse_compression(raw, "recipe")
    except ConfigError as e:
        return None, list(e.problems)
    except UsageError as e:
        return None, [f"compression: {e.message}"]
    return (None if cfg.empty else cfg), []


def _validate(r: Recipe) -> list[str]:
    from packager.export.capabilities import ALIASES, BACKENDS, check_combination
    from packager.verify import DEFAULT_TOLERANCES, TOLERANCE_KEYS

    problems: list[str] = []
    if not isinstance(r.model, str) or not r.model:
        problems.append("model: expected a model spec string")
    for name in ("backends", "schemes", "input_shapes"):
        v = getattr(r, name)
        if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v):
            problems.append(f"{name}: expected a list of strings, got {v!r}")
    for name in ("calibration", "evaluation", "out"):
        if not isinstance(getattr(r, name), str):
            problems.append(f"{name}: expected a string, got {getattr(r, name)!r}")
    for name, lo in (("calibration_count", 1), ("eval_count", 1), ("reference_samples", 1), ("seed", 0),
                     ("step_timeout", 0)):  # fmt: skip
        v = getattr(r, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            problems.append(f"{name}: expected an integer >= {lo}, got {v!r}")
    if r.threads is not None and (not isinstance(r.threads, int) or r.threads < 1):
        problems.append(f"threads: expected a positive integer, got {r.threads!r}")
    if r.float_fallback not in ("auto", "off"):
        problems.append(f"float_fallback: expected 'auto' or 'off', got {r.float_fallback!r}")
    if r.task is not None and r.task not in _TASKS:
        problems.append(
            f"task: expected one of {', '.join(_TASKS)}, got {r.task!r}" + _nearest(str(r.task), list(_TASKS))
        )
    for name in ("cache", "force", "bias_correction", "onnx_reduce_range"):
        if not isinstance(getattr(r, name), bool):
            problems.append(f"{name}: expected true or false, got {getattr(r, name)!r}")
    if r.preprocess is not None:
        if not isinstance(r.preprocess, dict):
            problems.append("preprocess: expected a mapping")
        else:
            for k in r.preprocess:
                if k not in ("resize_shorter", "mean", "std", "scale"):
                    problems.append(f"preprocess.{k}: unknown key" + _nearest(k, ["resize_shorter", "mean", "std"]))
    known_schemes = sorted({s for c in BACKENDS.values() for s in c.schemes} | set(ALIASES))
    if not isinstance(r.tolerances, dict):
        problems.append("tolerances: expected a mapping scheme -> {key: value}")
    else:
        for scheme, tol in r.tolerances.items():
            if scheme not in DEFAULT_TOLERANCES and scheme not in known_schemes:
                problems.append(f"tolerances.{scheme}: unknown scheme" + _nearest(str(scheme), known_schemes))
                continue
            if not isinstance(tol, dict):
                problems.append(f"tolerances.{scheme}: expected a mapping")
                continue
            for k, v in tol.items():
                if k not in TOLERANCE_KEYS:
                    problems.append(
                        f"tolerances.{scheme}.{k}: unknown tolerance" + _nearest(str(k), list(TOLERANCE_KEYS))
                    )
                elif not isinstance(v, (int, float)) or isinstance(v, bool):
                    problems.append(f"tolerances.{scheme}.{k}: expected a number, got {v!r}")
    if problems or not r.backends or not r.schemes:
        if not r.backends:
            problems.append("backends: at least one backend")
        if not r.schemes:
            problems.append("schemes: at least one scheme")
        return problems
    # Names: a misspelt name is an UnknownNameError (suggests the nearest), raised as such so its
    # message reads like every other registry miss; an impossible pairing lists what the backend can do.
    if ":" not in r.model and not r.model.endswith(".pt2"):
        from packager.models import BUILTIN_MODELS
        from packager.models.loaders import check_file_spec

        check_file_spec(r.model)
        BUILTIN_MODELS.check_name(r.model)  # a misspelt built-in fails here, before the output dir is touched
    for b in r.backends:
        if b not in BACKENDS:
            raise UnknownNameError(suggest(b, list(BACKENDS), "backend"))
    for s in r.schemes:
        if s.lower() not in known_schemes:
            raise UnknownNameError(suggest(s, known_schemes, "scheme"))
    for b in r.backends:
        for s in r.schemes:
            check_combination(b, ALIASES.get(s.lower(), s.lower()))
    if r.input_shapes:
        from packager.models.loaders import parse_input_shapes

        try:
            parse_input_shapes(list(r.input_shapes))
        except UsageError as e:
            problems.append(f"input_shapes: {e.message}")
    return problems
