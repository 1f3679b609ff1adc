"""What an exported artifact needs at run time, read from the artifact itself.

The manifest records this per artifact (``artifacts[].runtime``) so that ``mpk bench``
can refuse, before pushing anything, an artifact that a device's runtime cannot load
(``runners/compat.py``), and the apps can check it again before loading. Each rule
below comes from the runtime's own documentation or source, cited where it is used:

* **ExecuTorch** (``.pte``): the runtime accepts a program only when its flatbuffer
  file identifier equals the one it was built with (``Program::load`` in
  ``runtime/executor/program.cpp``: ``ProgramBufferHasIdentifier``; ``ET12`` in
  ``schema/program.fbs`` from v1.0.0 through v1.4.1). Above that, the policy in
  ``runtime/COMPATIBILITY.md`` (v1.4.1): a PTE made by release X.Y loads on runtime X.Y
  and at least the next non-patch release (backward compatibility); a newer PTE on an
  older runtime is *not guaranteed* (no forward compatibility). So the minimum runtime
  is the exporter's X.Y.0. The .pte holds no exporter version, so the installed
  ``executorch`` that wrote it is recorded.
* **ONNX** (``.onnx``): ONNX Runtime refuses a model whose ``ir_version`` is above the
  IR version of the ONNX it was built with, and (by default, ``allow_released_opsets_only``)
  any imported opset above the last *released* opset it knows for that domain
  (``onnxruntime/core/graph/model.cc`` and ``model_load_utils.h``:
  ``ValidateOpsetForDomain``). Which ONNX each ORT release bundles is ORT's table in
  ``docs/reference/compatibility.md``; what each ONNX release brings is ONNX's own
  ``onnx.helper.VERSION_TABLE`` (:data:`ONNX_RELEASES`, checked against the installed
  ``onnx`` by a test).
* **CoreML** (``.mlpackage``): ``specificationVersion``, the first field of
  ``Data/com.apple.CoreML/model.mlmodel``; coremltools maps each to the first iOS/macOS
  that reads it (``_SPECIFICATION_VERSION_IOS_*`` in ``coremltools/__init__.py``).

>>> onnx_min_runtime(10, {"": 20, "ai.onnx.ml": 5})
'1.18'
>>> coreml_min_os(7)
{'ios': '16.0', 'macos': '13.0'}
"""

from __future__ import annotations

import struct
from importlib import metadata
from pathlib import Path
from typing import Any

from mpk.errors import UsageError

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


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------ readers


def read_pte(path: Path) -> dict[str, Any]:
    """The .pte header: flatbuffer file identifier (bytes 4..8) and Program.version (the root table's field 0)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if len(head) < 8:
        raise UsageError(f"{path}: {len(head)} bytes is too short for an ExecuTorch program")
    ident = head[4:8].decode("ascii", "replace")
    program_version = None
    try:
        (root,) = struct.unpack_from("<I", head, 0)
        (vt_off,) = struct.unpack_from("<i", head, root)
        vtable = root - vt_off
        vt_len, _ = struct.unpack_from("<HH", head, vtable)
        field0 = struct.unpack_from("<H", head, vtable + 4)[0] if vt_len > 4 else 0
        program_version = struct.unpack_from("<I", head, root + field0)[0] if field0 else 0
    except struct.error:
        pass  # a header past the first 64 KiB or a corrupt one: the identifier alone still decides loading
    return {"file_identifier": ident, "program_version": program_version}


def read_onnx(path: Path) -> dict[str, Any]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise UsageError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    opsets = {o.domain: int(o.version) for o in proto.opset_import}
    producer = f"{proto.producer_name} {proto.producer_version}".strip() or None
    return {"ir_version": int(proto.ir_version), "opsets": opsets, "exported_with": producer}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def read_coreml(path: Path) -> dict[str, Any]:
    """``specificationVersion`` (field 1 of the Model message) of an .mlpackage or .mlmodel, read off the wire."""
    spec = path / "Data" / "com.apple.CoreML" / "model.mlmodel" if path.is_dir() else path
    try:
        buf = spec.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the CoreML model spec ({e.strerror})") from None
    i = 0
    try:
        while i < len(buf):
            key, i = _varint(buf, i)
            field, wire = key >> 3, key & 7
            if field == 1 and wire == 0:
                version, _ = _varint(buf, i)
                return {"spec_version": version}
            if wire == 0:
                _, i = _varint(buf, i)
            elif wire == 1:
                i += 8
            elif wire == 2:
                n, i = _varint(buf, i)
                i += n
            elif wire == 5:
                i += 4
            else:
                break
    except ValueError:
        pass
    raise UsageError(f"{spec}: no specificationVersion found; not a CoreML model spec")


# ------------------------------------------------------------------------ the requirement


def requirements(backend: str, path: Path) -> dict[str, Any]:
    """The manifest's ``artifacts[].runtime`` for the artifact at ``path`` (see the module docstring)."""
    path = Path(path)
    if backend == "executorch":
        pte = read_pte(path)
        made_by = _installed("executorch")
        mm = version_tuple(made_by or "")[:2]
        return {
            "runtime": "executorch",
            "min_version": f"{mm[0]}.{mm[1]}.0" if len(mm) == 2 else None,
            "exported_with": f"executorch {made_by}" if made_by else None,
            **pte,
        }
    if backend == "onnx":
        info = read_onnx(path)
        needed = {d: v for d, v in info["opsets"].items() if d in _ONNX_DOMAINS}
        return {
            "runtime": "onnxruntime",
            "min_version": onnx_min_runtime(info["ir_version"], needed),
            **info,
        }
    if backend == "coreml":
        info = read_coreml(path)
        os_min = coreml_min_os(info["spec_version"])
        return {
            "runtime": "coreml",
            "min_version": os_min["ios"] if os_min else None,
            "min_macos": os_min["macos"] if os_min else None,
            "exported_with": f"coremltools {made_by}" if (made_by := _installed("coremltools")) else None,
            **info,
        }
    raise UsageError(f"unknown backend {backend!r}; known: coreml, executorch, onnx")
