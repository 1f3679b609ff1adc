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

The version tables and comparisons themselves are :mod:`mpk.runtimes` (the bench needs them without torch).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from mpk.errors import UsageError
from mpk.files import installed_version
from mpk.runtimes import (
    _ONNX_DOMAINS,
    coreml_min_os,
    onnx_min_runtime,
    version_tuple,
)

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
    """IR version, opset imports and producer of an ``.onnx``, read off the protobuf wire (no ``onnx`` import:
    a cached ``mpk package`` re-run imports no runtime library). ModelProto fields (onnx/onnx.proto3):
    1 ``ir_version``, 2 ``producer_name``, 3 ``producer_version``, 8 ``opset_import`` (OperatorSetIdProto:
    1 ``domain``, 2 ``version``). The graph (field 7) is skipped by its length, not parsed."""
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the ONNX model ({e.strerror})") from None
    ir_version, names, opsets = None, {2: "", 3: ""}, {}
    try:
        for field, wire, value in _fields(buf):
            if field == 1 and wire == 0:
                ir_version = value
            elif field in names and wire == 2:
                names[field] = bytes(value).decode("utf-8", "replace")
            elif field == 8 and wire == 2:
                entry = {f: v for f, w, v in _fields(bytes(value)) if (f, w) in ((1, 2), (2, 0))}
                opsets[bytes(entry.get(1, b"")).decode("utf-8", "replace")] = int(entry.get(2, 0))
    except ValueError as e:
        raise UsageError(f"{path}: not an ONNX model ({e})") from None
    if ir_version is None or not opsets:
        raise UsageError(f"{path}: not an ONNX model (no ir_version or opset_import)")
    producer = f"{names[2]} {names[3]}".strip() or None
    return {"ir_version": int(ir_version), "opsets": opsets, "exported_with": producer}


def _fields(buf: bytes) -> Any:
    """(field number, wire type, value) of each top-level protobuf field; value is an int or a memoryview."""
    view, i = memoryview(buf), 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = view[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            value, i = view[i : i + n], i + n
        elif wire == 5:
            value, i = view[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} at byte {i}")
        yield field, wire, value


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
        made_by = installed_version("executorch")
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
            "exported_with": f"coremltools {made_by}" if (made_by := installed_version("coremltools")) else None,
            **info,
        }
    raise UsageError(f"unknown backend {backend!r}; known: coreml, executorch, onnx")
