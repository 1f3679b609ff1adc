"""What each backend can do, as plain data. No torch, executorch or coremltools import.

Kept apart from the exporters so ``mpk backends`` and the CLI's argument
checks answer instantly and an impossible combination (``coreml`` +
``int8-dynamic``) is refused before minutes of export work start::

    >>> resolve_scheme("onnx", "none")
    'fp32'
    >>> check_combination("coreml", "int8-dynamic")
    Traceback (most recent call last):
    ...
    mpk.errors.UsageError: backend 'coreml' has no scheme 'int8-dynamic'; it supports: fp32, fp16, int8, palettize4, ...
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from mpk.errors import UsageError
from mpk.registry import suggest


@dataclass(frozen=True)
class BackendCapabilities:
    """One backend's facts. ``run_os`` is None when any host OS can run the artifact."""

    name: str
    suffix: str
    description: str
    #: scheme -> one-line description, in the order ``mpk backends`` shows them
    schemes: dict[str, str]
    #: ``sys.platform`` value needed to run (not to build) the artifact on the host; None = any
    run_os: str | None = None
    #: schemes that need calibration samples (static activation ranges)
    needs_calibration: frozenset[str] = field(default_factory=frozenset)

    def can_run_on(self, platform: str) -> bool:
        return self.run_os is None or platform == self.run_os


BACKENDS: dict[str, BackendCapabilities] = {
    "executorch": BackendCapabilities(
        name="executorch",
        suffix=".pte",
        description="ExecuTorch program lowered to the XNNPACK delegate (Android/iOS CPU)",
        schemes={
            "fp32": "float32 weights and activations, XNNPACK-delegated",
            "int8": "PT2E XNNPACKQuantizer static int8, per-channel weights, calibrated activations, bias-corrected",
            "int8-dynamic": "dynamic int8 (weights int8, activations quantized at run time); for linear-heavy models",
        },
        needs_calibration=frozenset({"int8"}),
    ),
    "onnx": BackendCapabilities(
        name="onnx",
        suffix=".onnx",
        description="single-file ONNX model for ONNX Runtime (Android/iOS/desktop)",
        schemes={
            "fp32": "float32 ONNX graph exported with torch.onnx (dynamo)",
            "int8": "onnxruntime static QDQ int8, per-channel weights, calibrated activations, bias-corrected",
            "int8-dynamic": "onnxruntime dynamic int8 (weights int8, activations quantized at run time)",
        },
        needs_calibration=frozenset({"int8"}),
    ),
    "coreml": BackendCapabilities(
        name="coreml",
        suffix=".mlpackage",
        description="Core ML mlprogram package (iOS 16+/macOS); prediction needs macOS",
        schemes={
            "fp32": "mlprogram with float32 compute precision",
            "fp16": "mlprogram with float16 compute precision (ANE/GPU friendly)",
            "int8": "linear symmetric int8 weight quantization (coremltools.optimize)",
            "palettize4": "4-bit k-means weight palettization (16-entry lookup table)",
            "palettize6": "6-bit k-means weight palettization (64-entry lookup table)",
            "palettize8": "8-bit k-means weight palettization (256-entry lookup table)",
        },
        run_os="darwin",
    ),
}

#: user-facing scheme spellings -> canonical scheme. ``none`` means "no quantization" on every backend.
ALIASES: dict[str, str] = {"none": "fp32", "float32": "fp32", "float16": "fp16", "dynamic": "int8-dynamic"}


def backend(name: str) -> BackendCapabilities:
    """The capabilities of backend ``name``; an unknown name suggests the nearest."""
    try:
        return BACKENDS[name]
    except KeyError:
        from mpk.errors import UnknownNameError

        raise UnknownNameError(suggest(name, list(BACKENDS), "backend")) from None


def resolve_scheme(backend_name: str, user_scheme: str) -> str:
    """Map a user's scheme spelling to the canonical one and check the backend has it.

    >>> resolve_scheme("executorch", "none")
    'fp32'
    """
    scheme = ALIASES.get(user_scheme.strip().lower(), user_scheme.strip().lower())
    check_combination(backend_name, scheme)
    return scheme


def check_combination(backend_name: str, scheme: str) -> None:
    """Raise UsageError when ``backend_name`` cannot produce ``scheme``; the message lists what it can."""
    caps = backend(backend_name)
    if scheme in caps.schemes:
        return
    known = list(caps.schemes)
    close = difflib.get_close_matches(scheme, known, n=1, cutoff=0.5)
    msg = f"backend {backend_name!r} has no scheme {scheme!r}; it supports: {', '.join(known)}"
    others = [b for b, c in BACKENDS.items() if scheme in c.schemes and b != backend_name]
    hint = f"{scheme!r} is available on: {', '.join(others)}" if others else None
    if close:
        hint = f"did you mean {close[0]!r}?" + (f" ({hint})" if hint else "")
    raise UsageError(msg, hint=hint)


def schemes(backend_name: str) -> list[str]:
    return list(backend(backend_name).schemes)


def all_combinations() -> list[tuple[str, str]]:
    """Every (backend, scheme) pair, for ``mpk backends`` and for matrix expansion."""
    return [(b, s) for b, c in BACKENDS.items() for s in c.schemes]
