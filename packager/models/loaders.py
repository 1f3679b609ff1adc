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

from mpk.errors import ModelError, MpkError, UnknownNameError, UsageError
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


def export_shape(spec: TensorSpec) -> tuple[int, ...]:
    """The shape of the example ``torch.export`` captures with: a dynamic dim takes a value that is neither 1 nor,
    where the range allows, its minimum. torch.export specialises a dim of size 1 (and only a non-1 example proves
    the graph general), so ``batch=1..8`` is captured at batch 2.

    >>> export_shape(TensorSpec("x", ("batch", 3), "float32", {"batch": (1, 8)}))
    (2, 3)
    """
    out = []
    for d in spec.shape:
        if isinstance(d, int):
            out.append(d)
            continue
        lo, hi = spec.dynamic[d]
        out.append(lo if lo > 1 else min(2, hi))
    return tuple(out)


def _dtype_of_array(a: Any) -> str:
    """The TensorSpec dtype for a data array: float64 becomes float32 (what PyTorch models compute in)."""
    name = str(a.dtype)
    return "float32" if name == "float64" else name


def infer_inputs(paths: list[str], params: list[str]) -> list[TensorSpec] | None:
    """Input specs read from the first ``.npz`` of ``paths`` that exists: its arrays (leading axis = sample), named
    by their keys, each sample's shape with its batch dim, the array's dtype. Keys ``labels`` and ``output:*`` are
    not inputs. Ordered as the forward's parameters ``params`` when they name every array, else as stored.

    A sample keeps its batch dim when the array has one: ``(N, 1, 3, 32, 32)`` gives ``(1, 3, 32, 32)``;
    ``(N, 20)`` gives ``(1, 20)``. None when no path is an ``.npz`` file.
    """
    import numpy as np

    for p in paths:
        path = Path(p)
        if path.suffix != ".npz" or not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {
                    k.removeprefix("input:"): z[k] for k in z.files if k != "labels" and not k.startswith("output:")
                }
        except Exception as e:
            raise UsageError(f"cannot read {path} to infer the model's inputs: {type(e).__name__}: {e}") from e
        if not arrays:
            raise UsageError(f"{path}: no input arrays to infer the model's inputs from")
        names = [n for n in params if n in arrays] if set(arrays) <= set(params) else list(arrays)
        specs = []
        for n in names:
            a = arrays[n]
            if a.ndim < 2:
                raise UsageError(f"{path}: array {n!r} has shape {a.shape}; expected (samples, ...)")
            shape = a.shape[1:] if a.ndim >= 3 and a.shape[1] == 1 else (1, *a.shape[1:])
            specs.append(TensorSpec(n, tuple(int(d) for d in shape), _dtype_of_array(a)))  # type: ignore[arg-type]
        return specs
    return None


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


TASKS = ("classification", "language-model", "segmentation", "other")


def _classify(
    outputs: list[TensorSpec], module: Any = None, inputs: list[TensorSpec] | None = None
) -> tuple[str, int | None]:
    """What the first output decides, from the outputs (mpk.metrics counts top-1 agreement by it).

    A single (1, C) float output with C >= 2: class scores ("classification"). A (1, T, V) float output of a model
    with integer inputs whose largest embedding table (the vocabulary) has V rows: next-token scores
    ("language-model"; a text encoder's (1, T, H) hidden states have H != V). Anything else is "other" (no top-1);
    segmentation must be declared.
    """
    first = outputs[0] if outputs else None
    if first is None or not first.dtype.startswith("float"):
        return "other", None
    if len(outputs) == 1 and len(first.shape) == 2:
        c = first.shape[1]
        if isinstance(c, int) and c >= 2:
            return "classification", c
    if len(first.shape) == 3 and module is not None and any(s.dtype.startswith("int") for s in inputs or []):
        import torch

        tables = [m.num_embeddings for m in module.modules() if isinstance(m, torch.nn.Embedding)]
        if tables and max(tables) == first.shape[2]:
            return "language-model", None
    return "other", None


def _declared_task(module: Any, task: str | None, spec: str) -> str | None:
    """The task the recipe gives, else the module's ``mpk_task`` attribute; None: infer it."""
    declared = task or getattr(module, "mpk_task", None)
    if declared is not None and declared not in TASKS:
        raise UsageError(f"{spec}: task {declared!r} is not one of {', '.join(TASKS)}")
    return declared


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
    data: list[str] | None = None,
    task: str | None = None,
) -> LoadedModel:
    """Common tail of every loader: eval mode, input/output specs, hash, task.

    Inputs come from, in this order: ``input_shapes`` (``--input-shape``; dtypes and a batch-1 example from the
    factory are kept, the example grown to a non-1 size along dynamic dims), the factory's example, or the
    ``.npz`` files in ``data`` (calibration/evaluation) when the factory returned only a module.
    """
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
    given_example = None
    if example is not None:
        given_example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
        if not all(isinstance(t, torch.Tensor) for t in given_example):
            raise UsageError(f"{source['spec']}: example_inputs must be tensors")
    specs: list[TensorSpec] = []
    if input_shapes:
        specs = _with_example_dtypes(list(input_shapes.values()), given_example)
        example = _examples(specs, given_example)
    elif given_example is not None:
        example = given_example
        names = params[: len(example)] if len(params) >= len(example) else [f"input_{i}" for i in range(len(example))]
        specs = [TensorSpec(n, tuple(t.shape), _dtype_name(t)) for n, t in zip(names, example, strict=True)]  # type: ignore[arg-type]
    else:
        inferred = infer_inputs(data or [], params)
        if inferred is None:
            raise UsageError(
                f"{source['spec']}: the factory returned only a module, so mpk cannot know the input shape",
                hint="give --calibration/--evaluation as .npz (inputs are read from them), pass --input-shape "
                "NAME:1x3x224x224, or return (module, example_inputs)",
            )
        specs = inferred
        example = _examples(specs, None)
    outputs = _output_specs(module, example, output_names)
    if any(isinstance(d, str) for s in specs for d in s.shape):
        outputs = _symbolic_outputs(module, specs, example, outputs)
    declared = _declared_task(module, task, source["spec"])
    task_found, num_classes = _classify(outputs, module, specs)
    if declared is not None:
        task_found = declared
        num_classes = num_classes if declared == "classification" else None
    return LoadedModel(
        name=name,
        module=module,
        example_inputs=example,
        inputs=specs,
        outputs=outputs,
        source=source,
        sha256=state_dict_sha256(module, extra_hash),
        task=task_found,  # type: ignore[arg-type]
        num_classes=num_classes,
        preprocess=preprocess,
    )


def _with_example_dtypes(specs: list[TensorSpec], example: tuple[Any, ...] | None) -> list[TensorSpec]:
    """``--input-shape`` specs (float32 by default) with the dtypes of the factory's example where it has one:
    token ids stay int64."""
    import dataclasses

    if example is None or len(example) != len(specs):
        return specs
    return [dataclasses.replace(s, dtype=_dtype_name(t)) for s, t in zip(specs, example, strict=True)]  # type: ignore[arg-type]


def _examples(specs: list[TensorSpec], given: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The example torch.export captures with (:func:`export_shape`): the factory's own example repeated along
    each dynamic dim where it fits (its values and dtypes, token ids included), else seeded random data of the
    spec's dtype (integers in [0, 2): valid ids and mask values for any vocabulary)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    out = []
    for i, s in enumerate(specs):
        want = export_shape(s)
        t = given[i] if given is not None and i < len(given) else None
        if t is not None and t.dim() == len(want):
            for axis, size in enumerate(want):
                if t.shape[axis] != size and t.shape[axis] == 1:
                    t = t.expand(*[size if a == axis else -1 for a in range(t.dim())]).contiguous()
            if tuple(t.shape) == want:
                out.append(t)
                continue
        dtype = getattr(torch, s.dtype)
        if dtype.is_floating_point:
            out.append(torch.randn(want, generator=gen, dtype=dtype))
        else:
            out.append(torch.randint(0, 2, want, generator=gen, dtype=dtype))
    return tuple(out)


def _symbolic_outputs(
    module: Any, specs: list[TensorSpec], example: tuple[Any, ...], outputs: list[TensorSpec]
) -> list[TensorSpec]:
    """Output specs whose dims follow a dynamic input dim carry its name (``("batch", 10)``): the outputs at the
    export example and at the minimum shapes are compared, and a dim that moved with the input is named."""
    import dataclasses

    small = _examples(
        [dataclasses.replace(s, dynamic={k: (lo, lo) for k, (lo, _) in s.dynamic.items()}) for s in specs], None
    )
    small = tuple(t.to(e.dtype) for t, e in zip(small, example, strict=True))
    try:
        at_min = _output_specs(module, small, [o.name for o in outputs])
    except MpkError:
        return outputs
    moved = {}
    for s, big, little in zip(specs, example, small, strict=True):
        for axis, d in enumerate(s.shape):
            if isinstance(d, str):
                moved[(int(big.shape[axis]), int(little.shape[axis]))] = (d, s.dynamic[d])
    fixed = []
    for o, m in zip(outputs, at_min, strict=True):
        shape, dynamic = [], {}
        for a, b in zip(o.shape, m.shape, strict=False):
            name = moved.get((a, b)) if a != b else None
            if name is None:
                shape.append(a)
            else:
                shape.append(name[0])
                dynamic[name[0]] = name[1]
        fixed.append(dataclasses.replace(o, shape=tuple(shape), dynamic=dynamic))
    return fixed


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


def _load_pt2(spec: str, path: Path, task: str | None = None) -> LoadedModel:
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
        first = str(e).splitlines()[0].replace(" Please check the warnings above for possible errors.", "").strip()
        raise ModelError(
            f"{path}: torch.export.load failed: {type(e).__name__}: {first}",
            hint="run with --verbose to see torch's own log of what it could not read",
        ) from e
    args = next(iter(getattr(ep, "example_inputs", None) or ((), {})))
    names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    lm = finish_model(
        path.stem,
        ep.module(),
        tuple(args),
        {"kind": "pt2", "spec": spec},
        input_names=names or None,
        extra_hash=path.read_bytes(),
        task=task,
    )
    lm.exported_program = ep
    return lm


def check_file_spec(spec: str) -> None:
    """A ``.py`` model spec must name its factory: UsageError (one line) for ``path/to/file.py`` alone."""
    if spec.endswith(".py"):
        where = "" if Path(spec).is_file() else " (and there is no such file)"
        raise UsageError(f"{spec}: name the factory in the file as {spec}:FUNCTION{where}")


def load_model(
    spec: str,
    *,
    input_shape: list[str] | dict[str, TensorSpec] | None = None,
    data: list[str] | None = None,
    task: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (see the package docstring). ``input_shape`` overrides the inputs' specs; ``data`` (the
    calibration and evaluation specs) is where a module-only factory's inputs are read from; ``task`` overrides
    what the first output is taken to decide.

    >>> load_model("digits-cnn").inputs[0].shape  # doctest: +SKIP
    (1, 1, 8, 8)
    """
    from packager.models.registry import BUILTIN_MODELS

    shapes = parse_input_shapes(input_shape) if isinstance(input_shape, (list, tuple)) else input_shape
    if spec in BUILTIN_MODELS:
        fn = BUILTIN_MODELS.get(spec)
        lm = fn(input_shapes=shapes or None)  # type: ignore[operator]
        if task is not None:
            lm.task, lm.num_classes = task, lm.num_classes if task == "classification" else None  # type: ignore[assignment]
        return lm
    if spec.endswith(".pt2"):
        return _load_pt2(spec, Path(spec), task)
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr or not target:
        check_file_spec(spec)
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
            data=data,
            task=task,
        )
    try:
        mod = importlib.import_module(target)
    except ImportError as e:
        raise UsageError(f"{spec}: cannot import module {target!r}: {e}") from e
    except Exception as e:
        raise ModelError(f"{spec}: importing {target!r} raised {type(e).__name__}: {e}") from e
    module, example = _call_factory(spec, _get_attr(spec, mod, attr))
    return finish_model(
        attr, module, example, {"kind": "module", "spec": spec}, input_shapes=shapes or None, data=data, task=task
    )
