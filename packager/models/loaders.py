"""Turn a model spec into a LoadedModel: built-in name, ``.pt2`` file, or a user factory."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from mpk.errors import ModelError, UnknownNameError, UsageError
from mpk.registry import suggest
from packager.types import LoadedModel, TensorSpec

_DIM_RE = re.compile(r"^(?:(\d+)|([A-Za-z_]\w*)=(\d+)\.\.(\d+))$")


def parse_input_shapes(specs: list[str] | tuple[str, ...]) -> dict[str, TensorSpec]:
    """Parse ``name:1x3x224x224`` flags; a dim ``batch=1..8`` is dynamic between 1 and 8.

    >>> parse_input_shapes(["image:batch=1..8x3x224x224"])["image"].dynamic
    {'batch': (1, 8)}
    """
    out: dict[str, TensorSpec] = {}
    problems: list[str] = []
    for spec in specs:
        name, sep, dims = spec.partition(":")
        if not sep or not name or not dims:
            problems.append(f"input shape {spec!r}: expected NAME:DxDxD, e.g. image:1x3x224x224")
            continue
        shape: list[int | str] = []
        dynamic: dict[str, tuple[int, int]] = {}
        for tok in dims.split("x"):
            m = _DIM_RE.match(tok.strip())
            if not m:
                problems.append(f"input shape {spec!r}: bad dimension {tok!r} (an int, or sym=MIN..MAX)")
                break
            if m.group(1):
                shape.append(int(m.group(1)))
            else:
                lo, hi = int(m.group(3)), int(m.group(4))
                if not 1 <= lo <= hi:
                    problems.append(f"input shape {spec!r}: dynamic range {lo}..{hi} must satisfy 1 <= MIN <= MAX")
                    break
                shape.append(m.group(2))
                dynamic[m.group(2)] = (lo, hi)
        else:
            out[name] = TensorSpec(name, tuple(shape), "float32", dynamic)
    if problems:
        raise UsageError("; ".join(problems))
    return out


def example_shape(spec: TensorSpec) -> tuple[int, ...]:
    """Concrete shape for an example tensor: a dynamic dim takes its minimum (samples have batch 1)."""
    return tuple(d if isinstance(d, int) else spec.dynamic[d][0] for d in spec.shape)


def state_dict_sha256(module: Any, extra: bytes = b"") -> str:
    """sha256 over every state_dict tensor (name, dtype, shape, bytes) and the module's repr.

    A retrained model, or the same weights in a changed architecture, gets a new hash (and so new cache keys).
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # float() first: numpy has no bfloat16, and the hash only needs to be stable per tensor
        h.update((t.float() if t.dtype.is_floating_point else t).reshape(-1).numpy().tobytes())
    # The architecture too: same weights under another activation (ReLU6 vs Swish) is another model.
    h.update(repr(module).encode())
    h.update(extra)
    return h.hexdigest()


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def _output_specs(module: Any, example: tuple[Any, ...], names: list[str] | None = None) -> list[TensorSpec]:
    import torch

    try:
        with torch.no_grad():
            out = module(*example)
    except Exception as e:  # the user's model itself is broken on its own example input
        raise ModelError(f"model fails on its example input: {type(e).__name__}: {e}") from e
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise ModelError("model must return a tensor or a tuple of tensors")
    if names is None:
        names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    return [TensorSpec(n, tuple(o.shape), _dtype_name(o)) for n, o in zip(names, outs, strict=True)]  # type: ignore[arg-type]


def _classify(outputs: list[TensorSpec]) -> tuple[str, int | None]:
    """A single (1, C) float output with C >= 2 is treated as class scores; top-1 metrics then apply."""
    if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].dtype.startswith("float"):
        c = outputs[0].shape[1]
        if isinstance(c, int) and c >= 2:
            return "classification", c
    return "other", None


def finish_model(
    name: str,
    module: Any,
    example: tuple[Any, ...] | None,
    source: dict[str, str],
    *,
    input_shapes: dict[str, TensorSpec] | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    extra_hash: bytes = b"",
    preprocess: dict[str, Any] | None = None,
) -> LoadedModel:
    """Common tail of every loader: eval mode, input/output specs, hash, task."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"{source['spec']}: expected an nn.Module or (module, example_inputs), got {type(module)}")
    try:
        module.eval()
    except NotImplementedError:
        pass  # an ExportedProgram's module keeps the mode it was exported in and refuses eval()
    if input_names is None:
        try:
            params = [
                p.name
                for p in inspect.signature(module.forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            params = []
    else:
        params = list(input_names)
    specs: list[TensorSpec] = []
    if input_shapes:
        given = list(input_shapes.values())
        specs = given
        gen = torch.Generator().manual_seed(0)
        example = tuple(torch.randn(example_shape(s), generator=gen) for s in given)
    elif example is None:
        raise UsageError(
            f"{source['spec']}: the factory returned only a module, so mpk cannot know the input shape",
            hint="pass --input-shape NAME:1x3x224x224 or return (module, example_inputs)",
        )
    else:
        example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        if not all(isinstance(t, torch.Tensor) for t in example):
            raise UsageError(f"{source['spec']}: example_inputs must be tensors")
        names = params[: len(example)] if len(params) >= len(example) else [f"input_{i}" for i in range(len(example))]
        specs = [TensorSpec(n, tuple(t.shape), _dtype_name(t)) for n, t in zip(names, example, strict=True)]  # type: ignore[arg-type]
    outputs = _output_specs(module, example, output_names)
    task, num_classes = _classify(outputs)
    return LoadedModel(
        name=name,
        module=module,
        example_inputs=example,
        inputs=specs,
        outputs=outputs,
        source=source,
        sha256=state_dict_sha256(module, extra_hash),
        task=task,  # type: ignore[arg-type]
        num_classes=num_classes,
        preprocess=preprocess,
    )


def _call_factory(spec: str, fn: Any) -> tuple[Any, Any]:
    if not callable(fn):
        raise UsageError(f"{spec}: {fn!r} is not callable")
    try:
        ret = fn()
    except Exception as e:
        raise ModelError(f"{spec}: the factory raised {type(e).__name__}: {e}") from e
    if isinstance(ret, tuple) and len(ret) == 2:
        return ret[0], ret[1]
    return ret, None


def _get_attr(spec: str, mod: Any, attr: str) -> Any:
    if not hasattr(mod, attr):
        known = [n for n, v in vars(mod).items() if callable(v) and not n.startswith("_")]
        raise UsageError(f"{spec.rpartition(':')[0]}: " + suggest(attr, known, "factory"))
    return getattr(mod, attr)


def _load_file_factory(spec: str, path: Path, attr: str) -> tuple[Any, Any, bytes]:
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    src = path.read_bytes()
    mod_name = "mpk_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    mspec = importlib.util.spec_from_file_location(mod_name, path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    sys.modules[mod_name] = mod
    try:
        mspec.loader.exec_module(mod)
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ModelError(f"{path}: importing the file raised {type(e).__name__}: {e}") from e
    module, example = _call_factory(spec, _get_attr(spec, mod, attr))
    return module, example, src


def _load_pt2(spec: str, path: Path) -> LoadedModel:
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{path}: not a torch.export archive (a .pt2 is a zip file; this one is not)",
            hint="the file is truncated or damaged, or was not written by torch.export.save",
        )
    import torch

    try:
        ep = torch.export.load(str(path))  # it logs a traceback first; `mpk package` keeps that to --verbose
    except Exception as e:
        raise ModelError(f"{path}: torch.export.load failed: {type(e).__name__}: {e}") from e
    args = next(iter(getattr(ep, "example_inputs", None) or ((), {})))
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    lm = finish_model(
        path.stem,
        ep.module(),
        tuple(args),
        {"kind": "pt2", "spec": spec},
        input_names=names or None,
        extra_hash=path.read_bytes(),
    )
    lm.exported_program = ep
    return lm


def load_model(spec: str, *, input_shape: list[str] | dict[str, TensorSpec] | None = None) -> LoadedModel:
    """Load ``spec`` (see the package docstring). ``input_shape`` overrides the inputs' specs.

    >>> load_model("digits-cnn").inputs[0].shape  # doctest: +SKIP
    (1, 1, 8, 8)
    """
    from packager.models.registry import BUILTIN_MODELS

    shapes = parse_input_shapes(input_shape) if isinstance(input_shape, (list, tuple)) else input_shape
    if spec in BUILTIN_MODELS:
        fn = BUILTIN_MODELS.get(spec)
        return fn(input_shapes=shapes or None)  # type: ignore[operator]
    if spec.endswith(".pt2"):
        return _load_pt2(spec, Path(spec))
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr or not target:
        # Neither a file factory nor module factory: most likely a misspelt built-in.
        raise UnknownNameError(
            suggest(spec, BUILTIN_MODELS.names(), "model"),
            hint="other forms: path/to/file.py:factory, package.module:factory, model.pt2",
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        module, example, src = _load_file_factory(spec, path, attr)
        return finish_model(
            f"{path.stem}.{attr}",
            module,
            example,
            {"kind": "file", "spec": spec},
            input_shapes=shapes or None,
            extra_hash=src,
        )
    try:
        mod = importlib.import_module(target)
    except ImportError as e:
        raise UsageError(f"{spec}: cannot import module {target!r}: {e}") from e
    except Exception as e:
        raise ModelError(f"{spec}: importing {target!r} raised {type(e).__name__}: {e}") from e
    module, example = _call_factory(spec, _get_attr(spec, mod, attr))
    return finish_model(attr, module, example, {"kind": "module", "spec": spec}, input_shapes=shapes or None)
