"""Exporters, one module per backend, behind :class:`packager.export.base.Exporter`.

Entries are lazy ``"module:attr"`` strings: listing backends or checking a
name imports no torch, executorch or coremltools; ``EXPORTERS.get(name)``
imports only the backend asked for.
"""

from __future__ import annotations

from mpk.registry import Registry
from packager.export.base import Exporter

EXPORTERS: Registry[type[Exporter]] = Registry("backend", Exporter)
EXPORTERS.register("executorch", "packager.export.executorch:ExecuTorchExporter")
EXPORTERS.register("onnx", "packager.export.onnx:OnnxExporter")
EXPORTERS.register("coreml", "packager.export.coreml:CoreMLExporter")


def get_exporter(backend: str) -> Exporter:
    """An exporter instance for ``backend`` (imports that backend's libraries only)."""
    return EXPORTERS.get(backend)()


__all__ = ["EXPORTERS", "Exporter", "get_exporter"]
