"""runners/matrix.py int8_exact: whether the CPU that ran an ONNX int8 cell computed the artifact's graph."""

from __future__ import annotations

import pytest

from runners.matrix import int8_exact

AVX2 = {"int8_kernel": {"name": "avx2", "saturates": True}}
VNNI = {"int8_kernel": {"name": "avx512-vnni", "saturates": False}}


def art(backend: str, scheme: str, safe: bool | None = None) -> dict:
    q = {} if safe is None else {"saturation_safe": safe}
    return {"backend": backend, "scheme": scheme, "details": {"quantizer": q}}


@pytest.mark.parametrize(
    ("artifact", "device", "want"),
    [
        (art("onnx", "int8", safe=False), AVX2, False),  # full-range weights on a saturating kernel
        (art("onnx", "int8", safe=True), AVX2, True),  # 7-bit weights: exact there too
        (art("onnx", "int8", safe=False), VNNI, True),
        (art("onnx", "int8-dynamic", safe=False), AVX2, False),
        (art("onnx", "int8"), AVX2, False),  # a manifest that does not say: not safe
        (art("onnx", "fp32"), AVX2, None),  # float: no int8 kernel
        (art("executorch", "int8", safe=False), AVX2, None),  # XNNPACK does not pair bytes into int16
        (art("onnx", "int8", safe=False), {"model": "Pixel 7"}, None),  # a runner that does not report its kernel
        (art("onnx", "int8", safe=False), None, None),
    ],
)
def test_int8_exact(artifact: dict, device: dict | None, want: bool | None) -> None:
    assert int8_exact(artifact, device) is want
