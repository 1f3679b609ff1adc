"""Which runtime version loads which artifact: the compatibility rules of ExecuTorch, ONNX Runtime and
Core ML as data, shared by the packager (what an artifact needs, :mod:`packager.runtime_requirements`) and the
bench (what a device's runtime can load, :mod:`runners.compat`). Pure data and arithmetic on version strings:
no runtime is imported. The sources of each rule are cited in :mod:`packager.runtime_requirements`.

>>> onnx_min_runtime(10, {"": 20, "ai.onnx.ml": 5})
'1.18'
>>> coreml_min_os(7)
{'ios': '16.0', 'macos': '13.0'}
"""

from __future__ import annotations

#: ONNX release -> (IR version, ai.onnx opset, ai.onnx.ml opset, ai.onnx.training opset), from onnx.helper.VERSION_TABLE
ONNX_RELEASES: dict[str, tuple[int, int, int, int]] = {
    "1.8.0": (7, 13, 2, 1),
    "1.9.0": (7, 14, 2, 1),
    "1.10.0": (8, 15, 2, 1),
    "1.11.0": (8, 16, 3, 1),
    "1.12.0": (8, 17, 3, 1),
    "1.13.0": (8, 18, 3, 1),
    "1.14.0": (9, 19, 3, 1),
    "1.14.1": (9, 19, 3, 1),
    "1.15.0": (9, 20, 4, 1),
    "1.16.0": (10, 21, 5, 1),
    "1.16.1": (10, 21, 5, 1),
    "1.17.0": (10, 22, 5, 1),
    "1.18.0": (11, 23, 5, 1),
}

#: ONNX Runtime minor release -> the ONNX release it bundles (ORT docs/reference/compatibility.md, newest row 1.20).
#: ORT's own table lists ONNX ML opset 4 for 1.18-1.20, but the check in model.cc reads the bundled ONNX's
#: registry, and ONNX 1.16 released ML opset 5 (onnx.helper.VERSION_TABLE); ONNX's number is used.
ORT_BUNDLED_ONNX: dict[str, str] = {
    "1.10": "1.10.0",
    "1.11": "1.11.0",
    "1.12": "1.12.0",
    "1.13": "1.12.0",
    "1.14": "1.13.0",
    "1.15": "1.14.0",
    "1.16": "1.14.1",
    "1.17": "1.15.0",
    "1.18": "1.16.0",
    "1.19": "1.16.1",
    "1.20": "1.16.1",
}

#: ONNX domains whose opset ORT checks and that ONNX_RELEASES describes ("" is ai.onnx)
_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training"})

#: CoreML specificationVersion -> first iOS / macOS that loads it (coremltools/__init__.py)
COREML_SPEC_OS: dict[int, tuple[str, str]] = {
    1: ("11.0", "10.13"),
    2: ("11.2", "10.13.2"),
    3: ("12.0", "10.14"),
    4: ("13.0", "10.15"),
    5: ("14.0", "11.0"),
    6: ("15.0", "12.0"),
    7: ("16.0", "13.0"),
    8: ("17.0", "14.0"),
    9: ("18.0", "15.0"),
    10: ("26.0", "26.0"),
}

#: the .pte flatbuffer file identifier every ExecuTorch 1.x runtime accepts (schema/program.fbs, v1.0.0..v1.4.1)
ET_FILE_IDENTIFIER = "ET12"


def version_tuple(v: str) -> tuple[int, ...]:
    """'1.4.1' -> (1, 4, 1); suffixes like '1.23.0+cpu' or '1.3.0a0' keep their leading numbers."""
    out = []
    for part in v.strip().split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def ort_capability(ort_minor: str) -> dict[str, int] | None:
    """What ORT ``ort_minor`` ('1.20') loads: {'ir': 10, '': 21, 'ai.onnx.ml': 5, ...}; None if not in the table."""
    onnx_release = ORT_BUNDLED_ONNX.get(ort_minor)
    if onnx_release is None:
        return None
    ir, opset, ml, training = ONNX_RELEASES[onnx_release]
    return {"ir": ir, "": opset, "ai.onnx": opset, "ai.onnx.ml": ml, "ai.onnx.training": training}


def covers(cap: dict[str, int], ir_version: int, opsets: dict[str, int]) -> bool:
    """Whether an ORT with capability ``cap`` (:func:`ort_capability`) loads this IR version and these opsets."""
    if ir_version > cap["ir"]:
        return False
    return all(v <= cap[d] for d, v in opsets.items() if d in cap)


def onnx_min_runtime(ir_version: int, opsets: dict[str, int]) -> str | None:
    """The oldest ORT release in :data:`ORT_BUNDLED_ONNX` that loads this IR version and these opsets.

    None when even the newest release in the table is too old (the model needs a newer ORT than mpk can name).
    """
    for minor in sorted(ORT_BUNDLED_ONNX, key=version_tuple):
        cap = ort_capability(minor)
        if cap is not None and covers(cap, ir_version, opsets):
            return minor
    return None


def coreml_min_os(spec_version: int) -> dict[str, str] | None:
    os_pair = COREML_SPEC_OS.get(spec_version)
    return {"ios": os_pair[0], "macos": os_pair[1]} if os_pair else None
