"""CoreML exporter: torch.export -> coremltools mlprogram ``.mlpackage`` (iOS 16+), optionally compressed.

Building works on any OS; *running* a CoreML model needs macOS (the
prediction framework is Apple's). Off macOS, :func:`structural_check` is the
honest substitute: it reads the package's spec and checks the input/output
names, shapes and dtypes a phone app will bind to, but proves nothing about
numerics. Weight compression (int8, palettize) leaves tensors with fewer than
``weight_threshold`` (2048) elements in float: they are a rounding error of the
file size and quantizing them costs accuracy for nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mpk.errors import ExportError, RuntimeMissing, UsageError
from packager.export.base import Exporter, HostSession, capture, describe_failure
from packager.export.capabilities import check_combination
from packager.types import Dataset, ExportedArtifact, LoadedModel, TensorSpec

#: coremltools' own default: smaller weight tensors stay float
WEIGHT_THRESHOLD = 2048
_PALETTE_BITS = {"palettize4": 4, "palettize6": 6, "palettize8": 8}
#: spec ArrayDataType enum name -> TensorSpec dtype
_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32", "INT8": "int8"}


def _tensor_types(specs: list[TensorSpec], *, with_shape: bool) -> list[Any]:
    """ct.TensorType per spec; names are set explicitly so the package's IO names equal the TensorSpecs'."""
    import coremltools as ct

    out = []
    for s in specs:
        dtype = _coreml_dtype(s.dtype)
        if not with_shape:
            # explicit dtype: with fp16 compute, outputs would otherwise turn float16 and break the IO contract
            out.append(ct.TensorType(name=s.name, dtype=dtype))
            continue
        dims: list[Any] = []
        for d in s.shape:
            if isinstance(d, str):
                lo, hi = s.dynamic.get(d, (1, -1))
                dims.append(ct.RangeDim(lower_bound=lo, upper_bound=hi, default=lo))
            else:
                dims.append(int(d))
        out.append(ct.TensorType(name=s.name, shape=ct.Shape(dims), dtype=dtype))
    return out


def _coreml_dtype(dtype: str) -> Any:
    """CoreML's dtype for a TensorSpec's: integer tensors (token ids, masks) are int32, CoreML has no int64 input;
    floats are float32 (float16 where the model's are)."""
    if dtype.startswith(("int", "uint")) or dtype == "bool":
        return np.int32
    return np.float16 if dtype == "float16" else np.float32


#: a TensorSpec dtype -> the dtype a CoreML package declares for it (what an app binds; see _coreml_dtype)
COREML_IO_DTYPE = {"int64": "int32", "int32": "int32", "int8": "int32", "uint8": "int32", "bool": "int32"}


def _without_aliases(ep: Any) -> Any:
    """Drop ``aten.alias`` nodes (a view of the whole tensor: each use can take the input itself). coremltools 9.0
    has no converter for ``alias``, which the default decompositions leave in a Llama-like model."""
    import torch

    gm = ep.graph_module
    changed = False
    for node in list(gm.graph.nodes):
        aliases = (torch.ops.aten.alias.default, torch.ops.aten.alias_copy.default)
        if node.op == "call_function" and node.target in aliases:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return ep


def unsupported_op(message: str) -> str | None:
    """The operator a coremltools conversion error names (``Unsupported fx node new_ones`` -> ``new_ones``)."""
    import re

    m = re.search(r"[Uu]nsupported fx node ([\w.]+)|[Cc]onvert function for op '([^']+)' not implemented", message)
    if not m:
        m = re.search(r"op '([^']+)' not implemented|PyTorch convert function for op '([^']+)'", message)
    return next((g for g in (m.groups() if m else ()) if g), None)


#: int8 leaves the constants these elementwise ops read in float. They are activations folded at conversion, not
#: weights: a BERT's position embeddings for a fixed sequence length, (1, 16, 384) in all-MiniLM-L6-v2. Their
#: channel axis has size 1, so one int8 scale covers the whole tensor, and its outlier dims (max 1.87, rms 0.037)
#: left it at 18.8 dB, under the weight check's 25 dB floor. Small next to the weights (24 KB there).
FLOAT_CONST_OPS = ("add", "sub", "mul", "real_div", "maximum", "minimum", "select")


def _compress(mlmodel: Any, scheme: str) -> tuple[Any, dict[str, Any]]:
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    if scheme == "int8":
        cfg = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", weight_threshold=WEIGHT_THRESHOLD)
        skip = dict.fromkeys(FLOAT_CONST_OPS)
        model = linear_quantize_weights(mlmodel, config=OptimizationConfig(global_config=cfg, op_type_configs=skip))
        return model, {"compression": "linear_quantize_weights", "mode": "linear_symmetric", "dtype": "int8",
                       "float_constants_of": list(FLOAT_CONST_OPS)}  # fmt: skip
    nbits = _PALETTE_BITS[scheme]
    cfg = OpPalettizerConfig(mode="kmeans", nbits=nbits, weight_threshold=WEIGHT_THRESHOLD)
    model = palettize_weights(mlmodel, config=OptimizationConfig(global_config=cfg))
    return model, {"compression": "palettize_weights", "mode": "kmeans", "nbits": nbits}


def mil_op_histogram(spec: Any) -> dict[str, int]:
    """Op type counts of the mlprogram's main function, consts left out (they are weights, not compute)."""
    if not spec.HasField("mlProgram"):
        return {}
    counts: collections.Counter[str] = collections.Counter()
    for fn in spec.mlProgram.functions.values():
        block = fn.block_specializations.get(fn.opset)
        if block is None:
            continue
        counts.update(op.type for op in block.operations if op.type != "const")
    return dict(sorted(counts.items()))


def spec_io(features: Any) -> list[dict[str, Any]]:
    out = []
    for f in features:
        kind = f.type.WhichOneof("Type")
        if kind == "multiArrayType":
            arr = f.type.multiArrayType
            from coremltools.proto import FeatureTypes_pb2

            dtype_name = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)
            shape: list[int] | None = list(arr.shape) or None
            out.append({"name": f.name, "shape": shape, "dtype": _DTYPES.get(dtype_name, dtype_name.lower())})
        else:
            out.append({"name": f.name, "shape": None, "dtype": kind})
    return out


def load_spec(path: Path) -> Any:
    """The protobuf spec of an ``.mlpackage`` without compiling it (works on Linux)."""
    import coremltools as ct

    try:
        return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as e:
        raise UsageError(f"{path}: not a readable Core ML package ({type(e).__name__}: {e})") from e


def structural_check(
    path: Path, expected_inputs: list[TensorSpec], expected_outputs: list[TensorSpec]
) -> dict[str, Any]:
    """Compare an ``.mlpackage``'s declared IO with the TensorSpecs an app will bind to.

    Runs anywhere (reads the spec, loads no model). Dynamic dims (str in the TensorSpec) match any
    size. Returns ``{"ok": bool, "problems": [...], "inputs": [...], "outputs": [...]}``, e.g. a
    renamed input gives ``problems == ["input 0: name 'input_1', expected 'image'"]``.
    """
    spec = load_spec(path)
    got_in, got_out = spec_io(spec.description.input), spec_io(spec.description.output)
    problems: list[str] = []
    for kind, got, want in (("input", got_in, expected_inputs), ("output", got_out, expected_outputs)):
        if len(got) != len(want):
            problems.append(f"{kind}s: package has {len(got)}, expected {len(want)}")
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            if g["name"] != w.name:
                problems.append(f"{kind} {i}: name {g['name']!r}, expected {w.name!r}")
            if g["dtype"] != COREML_IO_DTYPE.get(w.dtype, w.dtype):
                problems.append(f"{kind} {w.name}: dtype {g['dtype']}, expected {w.dtype}")
            if g["shape"] is not None:
                static = [d for d in w.shape]
                if len(g["shape"]) != len(static) or any(
                    not isinstance(d, str) and d != s for d, s in zip(static, g["shape"], strict=False)
                ):
                    problems.append(f"{kind} {w.name}: shape {g['shape']}, expected {list(w.shape)}")
    return {
        "ok": not problems,
        "problems": problems,
        "inputs": got_in,
        "outputs": got_out,
        "specification_version": spec.specificationVersion,
    }


#: what mpk suggests when coremltools cannot convert an operator (the op's name as coremltools spells it)
_WORKAROUNDS = {
    "lstm": "coremltools' torch.export frontend has no LSTM; export the recurrent part with torch.jit.trace and "
    "ct.convert it, or ship the ExecuTorch/ONNX artifact on iOS",
    "gru": "coremltools' torch.export frontend has no GRU; ship the ExecuTorch/ONNX artifact on iOS",
}


def _conversion_failure(exc: BaseException) -> str:
    """One line: the operator coremltools cannot convert, its version, what mpk applied and what to do."""
    from mpk.files import installed_version

    text = describe_failure(exc)
    op = unsupported_op(str(exc))
    version = installed_version("coremltools") or "?"
    if op is None:
        return f"coremltools {version} convert failed: {text}"
    base = op.split(".")[0].lower()
    hint = _WORKAROUNDS.get(base, f"register a composite for {op} with coremltools' register_torch_op, or rewrite it "
                                  "in the model with ops coremltools converts")  # fmt: skip
    return (
        f"coremltools {version} cannot convert operator {op!r} (mpk applied: torch.export's default decompositions, "
        f"aten.alias removed); suggested: {hint}. {text}"
    )


class CoreMLExporter(Exporter):
    name = "coreml"
    suffix = ".mlpackage"

    def export(self, model: LoadedModel, scheme: str, calibration: Dataset | None, out_dir: Path) -> ExportedArtifact:
        check_combination(self.name, scheme)
        import coremltools as ct

        ep = capture(model, self.name)
        try:
            # coremltools converts the core ATen opset: the default decomposition table turns training-IR ops
            # (new_ones, diff, ...) into it; an empty table left them, and every token model failed on them
            ep = _without_aliases(ep.run_decompositions())
            mlmodel = ct.convert(
                ep,
                inputs=_tensor_types(model.inputs, with_shape=True),
                outputs=_tensor_types(model.outputs, with_shape=False),
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT16 if scheme == "fp16" else ct.precision.FLOAT32,
                skip_model_load=True,  # loading compiles the model, which needs macOS
            )
        except Exception as e:
            raise ExportError(self.name, _conversion_failure(e)) from e
        details: dict[str, Any] = {
            "minimum_deployment_target": "iOS16",
            "compute_precision": "float16" if scheme == "fp16" else "float32",
        }
        from packager.export.coreml_weights import check_package, program_weights

        # what the package must store: the converted program's weights before any compression
        uncompressed = program_weights(mlmodel._mil_program)
        if scheme in ("int8", *_PALETTE_BITS):
            try:
                # a weight channel that is all zero gets scale 0 and 0/0 data (see coreml_weights); the weight
                # check below proves those channels dequantize to exactly 0, so NumPy's warning is not shown
                with np.errstate(invalid="ignore", divide="ignore"):
                    mlmodel, info = _compress(mlmodel, scheme)
            except Exception as e:
                raise ExportError(self.name, f"{scheme} weight compression failed: {describe_failure(e)}") from e
            details.update(info, weight_threshold=WEIGHT_THRESHOLD)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{model.name}-{scheme}{self.suffix}"
        if path.exists():
            shutil.rmtree(path)
        mlmodel.save(str(path))
        check = structural_check(path, model.inputs, model.outputs)
        if not check["ok"]:
            raise ExportError(self.name, "package IO does not match the model: " + "; ".join(check["problems"]))
        details["specification_version"] = check["specification_version"]
        details["weight_check"] = check_package(path, uncompressed, scheme)
        return ExportedArtifact(
            backend=self.name,
            scheme=scheme,
            path=path,
            # what the package declares: integer inputs as int32 (CoreML has no int64 input)
            inputs=[dataclasses.replace(s, dtype=COREML_IO_DTYPE.get(s.dtype, s.dtype)) for s in model.inputs],
            outputs=list(model.outputs),
            delegation=None,
            op_summary=mil_op_histogram(load_spec(path)),
            details=details,
        )

    def can_run_on_host(self) -> bool:
        return sys.platform == "darwin"

    def weight_check(self, artifact: ExportedArtifact) -> dict[str, Any] | None:
        """The stored-weight check made when the package was written (:mod:`packager.export.coreml_weights`).

        It compares the saved package with the program it was converted to, which only exists at export time;
        the manifest's sha256 then ties the checked bytes to the shipped ones (a cached package is re-hashed).
        """
        report = artifact.details.get("weight_check")
        if report is None:
            return None
        keys = ("ok", "problems", "layers", "worst_snr_db", "worst_layer", "min_snr_db", "zero_scale_channels")
        return {k: report[k] for k in keys if k in report}

    def open(self, path: Path, *, threads: int | None = None) -> HostSession:
        if sys.platform != "darwin":
            raise RuntimeMissing(
                "CoreML prediction needs macOS",
                hint="on Linux mpk checks the package structure only (names, shapes, dtypes)",
            )
        return CoreMLSession(path)  # pragma: no cover - macOS only


class CoreMLSession:  # pragma: no cover - macOS only; exercised by tests marked `macos`
    """An ``.mlpackage`` loaded with Core ML on macOS, CPU only so results compare with the other hosts."""

    def __init__(self, path: Path) -> None:
        import coremltools as ct

        try:
            self._model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        except Exception as e:
            raise UsageError(f"{path}: Core ML could not load the package ({type(e).__name__}: {e})") from e
        spec = self._model.get_spec()
        self._in = [f.name for f in spec.description.input]
        self._out = [f.name for f in spec.description.output]

    def run(self, inputs: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        res = self._model.predict(dict(zip(self._in, inputs, strict=True)))
        return [np.asarray(res[n]) for n in self._out]
