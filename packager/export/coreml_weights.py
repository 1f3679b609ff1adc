"""CoreML weight fidelity without a CoreML runtime: read the weights back out of a saved ``.mlpackage``.

Nothing off macOS can *run* a Core ML model, so off macOS mpk cannot say what the package computes. It can
say what the package stores. Every weight a compute op reads (a ``const``, or a ``constexpr_*`` op that
dequantizes int8 data or expands a palette at load time) is read back from the saved package with
coremltools' own MIL loader, expanded to dense floats exactly as Core ML defines it (coremltools'
``materialized_val_inference``), and compared with the same weight of the uncompressed program the package
was made from:

* any NaN or inf is a failure;
* per layer: SNR dB (10 log10 of signal power over error power) and max abs error; the worst layer must
  reach the scheme's floor (:data:`MIN_SNR_DB`), which sits well under what a sound compression gives on
  real weights (per-channel int8 ~35-45 dB, a 4-bit palette ~18-25 dB) and far over what a damaged file
  gives (a block of wrong bytes: < 10 dB);
* a weight the uncompressed program has and the package lacks, or with another shape, is a failure.

Weights are matched by the compute op that reads them and the input name (``conv_3.weight``): compression
renames the weight's own op (``const_4`` -> ``const_4_quantized``) but leaves the ops that read it alone.

**Dead channels.** coremltools' symmetric int8 quantizer computes a per-channel scale max|w| / 127. A channel
whose weights are all zero gets scale 0 and its int8 data comes from 0/0 (NumPy: "invalid value encountered
in cast"); it still dequantizes to exactly 0 (0 x anything). EfficientNet-Lite0 has 4 such depthwise channels
(BatchNorm scales of 0 folded into the weights). The check counts them, and fails on any output channel the
package stores as all zero that is not zero in fp32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: the lowest per-layer SNR (dB) each scheme's stored weights may have
MIN_SNR_DB: dict[str, float] = {
    "fp32": 120.0,
    "fp16": 50.0,
    "int8": 25.0,
    "palettize8": 25.0,
    "palettize6": 18.0,
    "palettize4": 10.0,
}
#: consts smaller than this are op parameters (strides, pads, axes), not weights
_MIN_SIZE = 16


def program_weights(program: Any) -> dict[str, np.ndarray]:
    """``{"<op name>.<input name>": dense float array}`` for every weight a compute op of ``program`` reads."""
    out: dict[str, np.ndarray] = {}
    for fn in program.functions.values():
        for op in fn.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr"):
                continue
            for name, var in op.inputs.items():
                producer = getattr(var, "op", None)  # a pymil Var made by an op; list inputs have none
                if producer is None:
                    continue
                value = _dense(producer)
                if value is not None and np.issubdtype(value.dtype, np.floating) and value.size >= _MIN_SIZE:
                    out[f"{op.name}.{name}"] = value
    return out


def _dense(op: Any) -> np.ndarray | None:
    if op.op_type == "const":
        val = op.val.val if op.val is not None else None
        return None if val is None else np.asarray(val)
    if op.op_type.startswith("constexpr"):
        return np.asarray(op.materialized_val_inference())
    return None


def zero_scale_channels(program: Any) -> dict[str, int]:
    """``{constexpr op name: channels}`` whose affine-dequantization scale is 0 (see the module docstring)."""
    found = {}
    for fn in program.functions.values():
        for op in fn.operations:
            if op.op_type == "constexpr_affine_dequantize" or op.op_type == "constexpr_blockwise_shift_scale":
                scale = np.asarray(op.inputs["scale"].val)
                zeros = int(np.count_nonzero(scale == 0))
                if zeros:
                    found[op.name] = zeros
    return found


def load_program(path: Path) -> Any:
    """The MIL program of a saved ``.mlpackage``, weights included, without compiling it (any OS)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    weights_dir = Path(path) / "Data" / "com.apple.CoreML" / "weights"
    return load_milproto(spec, spec.specificationVersion, str(weights_dir))


def snr_db(reference: np.ndarray, got: np.ndarray) -> float:
    """:func:`mpk.metrics.snr_db` of one weight tensor (all its values as one sample).

    >>> round(snr_db(np.array([1.0, -1.0]), np.array([1.1, -1.0])), 2)
    23.01
    """
    from mpk.metrics import snr_db as metric

    return metric(np.asarray(reference).reshape(1, -1), np.asarray(got).reshape(1, -1))


def compare(fp32: dict[str, np.ndarray], package: Any, scheme: str) -> dict[str, Any]:
    """The weight-fidelity report of a loaded package ``package`` (a MIL program) against ``fp32`` weights."""
    got = program_weights(package)
    floor = MIN_SNR_DB.get(scheme, MIN_SNR_DB["palettize4"])
    problems: list[str] = []
    layers: list[dict[str, Any]] = []
    for key, ref in fp32.items():
        value = got.get(key)
        if value is None:
            problems.append(f"{key}: in the uncompressed program but not in the package")
            continue
        if value.shape != ref.shape:
            problems.append(f"{key}: shape {list(value.shape)} in the package, {list(ref.shape)} before compression")
            continue
        # a constant the model itself holds as +-inf (a causal mask's -inf) is stored as it is: not a fault
        own = ~np.isfinite(ref) & (value == ref)
        bad = int(np.count_nonzero(~np.isfinite(value) & ~own))
        if bad:
            problems.append(f"{key}: {bad} NaN/inf value(s) in the stored weights")
            continue
        if own.any():
            ref, value = np.where(own, 0, ref), np.where(own, 0, value)
        if ref.ndim >= 2:
            rows_ref, rows_got = ref.reshape(ref.shape[0], -1), value.reshape(value.shape[0], -1)
            zeroed = int(np.count_nonzero((np.abs(rows_got).max(axis=1) == 0) & (np.abs(rows_ref).max(axis=1) > 0)))
            if zeroed:
                problems.append(f"{key}: {zeroed} output channel(s) stored as all zero that are not zero in fp32")
        db = snr_db(ref, value)
        err = float(np.max(np.abs(value.astype(np.float64) - ref.astype(np.float64))))
        layers.append({"weight": key, "snr_db": round(db, 2), "max_abs_error": err, "elements": int(ref.size)})
        if db < floor:
            problems.append(f"{key}: SNR {db:.1f} dB under the {scheme} floor of {floor:g} dB (max error {err:.3g})")
    zero_scale = zero_scale_channels(package)
    worst = min(layers, key=lambda r: r["snr_db"], default=None)
    return {
        "ok": not problems,
        "problems": problems,
        "layers": len(layers),
        "min_snr_db": floor,
        "worst_snr_db": worst["snr_db"] if worst else None,
        "worst_layer": worst["weight"] if worst else None,
        "zero_scale_channels": sum(zero_scale.values()),
        "per_layer": sorted(layers, key=lambda r: r["snr_db"])[:10],
    }


def check_package(path: Path, fp32: dict[str, np.ndarray], scheme: str) -> dict[str, Any]:
    """:func:`compare` on the package saved at ``path``; an unreadable package is a failed check, not a crash."""
    try:
        program = load_program(path)
    except Exception as e:
        return {"ok": False, "problems": [f"cannot read the package's weights: {type(e).__name__}: {e}"], "layers": 0}
    return compare(fp32, program, scheme)
