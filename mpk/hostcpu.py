"""What this machine's CPU can do, and what that means for int8 arithmetic.

Numbers that come from int8 kernels depend on the instruction set the runtime picked at start-up, so every
verification and benchmark records it. The features are read the way the runtimes read them: from CPUID on
x86-64 (through numpy's start-up probe, which uses CPUID too, so ``qemu-x86_64 -cpu Haswell`` reports a
Haswell), from the auxiliary vector / ``/proc/cpuinfo`` on arm64. ``/proc/cpuinfo`` adds the x86 flags numpy
does not probe (AVX-VNNI, AMX) only when it describes the same CPU as CPUID does; under an emulator it
describes the real host and is ignored.

ONNX Runtime's int8 kernels (MLAS, ``onnxruntime/core/mlas/lib/platform.cpp`` at v1.31.1, which is the
version mpk pins) pick the u8 x s8 GEMM and symmetric-convolution kernel in this order, the last match
winning:

==========================  ==================================  ===================================
CPU has                      kernel                              inner product
==========================  ==================================  ===================================
SSE4.1                       ``MlasGemmU8S8DispatchSse41``       ``pmaddubsw``: int16, saturating
AVX2 + FMA                   ``MlasGemmU8S8KernelAvx2``          ``vpmaddubsw``: int16, saturating
AVX-VNNI                     ``MlasGemmU8S8KernelAvxVnni``       ``vpdpbusd``: int32, exact
AVX-512 F+BW+DQ+VL           ``MlasGemmU8S8KernelAvx512Core``    ``vpmaddubsw``: int16, saturating
AVX-512 VNNI (with core)     ``MlasGemmU8S8KernelAvx512Vnni``    ``vpdpbusds``: int32, exact
AMX-INT8 + AMX-TILE          ``MlasGemmU8S8DispatchAmx``         tile dot products: int32, exact
arm64 (NEON; UDOT/SDOT)      ``MlasGemmX8S8DispatchNeon``/Udot   widening multiply or dot: exact
==========================  ==================================  ===================================

``vpmaddubsw`` multiplies unsigned activation bytes by signed weight bytes and adds each *pair* of products
into a signed 16-bit lane, clamping at ±32767: two products of 255 x 127 already make 64,770. So on an x86
CPU without VNNI a u8 x s8 int8 model can compute something other than what its QDQ graph says, and on a
phone (arm64) or a VNNI x86 it does not. ONNX Runtime's own docs describe the effect ("When and why do I need
to try U8U8?", ``docs/performance/model-optimizations/quantization.md``).

>>> int8_kernel(CpuFacts("x", "x86_64", ("avx2", "fma"))).saturates
True
>>> int8_kernel(CpuFacts("x", "aarch64", ("neon", "dotprod"))).saturates
False
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: numpy's CPUID names -> mpk's names (lower case, /proc/cpuinfo spelling where one exists)
_NUMPY_NAMES = {
    "SSE41": "sse4_1",
    "AVX": "avx",
    "AVX2": "avx2",
    "FMA3": "fma",
    "AVX512F": "avx512f",
    "AVX512BW": "avx512bw",
    "AVX512DQ": "avx512dq",
    "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni",
    "NEON": "neon",
    "ASIMD": "neon",
    "ASIMDDP": "dotprod",
}
#: /proc/cpuinfo flags numpy does not probe, and the arm64 names of the ones it does
_CPUINFO_EXTRA = {"avx_vnni": "avx_vnni", "amx_int8": "amx_int8", "amx_tile": "amx_tile"}
_CPUINFO_ARM = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm"}
#: the flags both sources report on x86, used to tell whether /proc/cpuinfo describes the CPUID's CPU
_CROSSCHECK = ("avx2", "avx512f", "avx512_vnni")
_AVX512_CORE = ("avx512f", "avx512bw", "avx512dq", "avx512vl")


@dataclass(frozen=True)
class CpuFacts:
    """A CPU as int8 kernels see it: ``features`` sorted, lower case (``avx2``, ``avx512_vnni``, ``dotprod``)."""

    model: str
    machine: str
    features: tuple[str, ...]
    #: how ``features`` were read: "cpuid", "cpuid+cpuinfo", "cpuinfo", "sysctl" or "unknown"
    source: str = "unknown"

    def has(self, *names: str) -> bool:
        return all(n in self.features for n in names)

    @property
    def arch(self) -> str:
        m = self.machine.lower()
        if m in ("x86_64", "amd64", "i686", "i386", "x86"):
            return "x86"
        if m in ("aarch64", "arm64") or m.startswith("armv8"):
            return "arm64"
        return m


@dataclass(frozen=True)
class Int8Kernel:
    """The u8 x s8 kernel ONNX Runtime picks on a CPU, and whether its inner product can saturate."""

    name: str
    saturates: bool
    why: str


def int8_kernel(cpu: CpuFacts) -> Int8Kernel:
    """ONNX Runtime 1.31's u8 x s8 GEMM/conv kernel for ``cpu``, by the precedence in the module docstring."""
    if cpu.arch == "arm64":
        if cpu.has("dotprod"):
            return Int8Kernel("arm64-udot", False, "UDOT/SDOT accumulate 4 byte products into int32")
        return Int8Kernel("arm64-neon", False, "NEON widens byte products to 16 bits and pair-adds into int32")
    if cpu.arch != "x86":
        return Int8Kernel("generic", False, "portable C kernel, int32 accumulation")
    pair16 = "vpmaddubsw adds pairs of u8 x s8 products in a saturating int16"
    kernel = Int8Kernel("sse2", False, "SSE2 widens to 16 bits before multiplying")
    if cpu.has("sse4_1"):
        kernel = Int8Kernel("sse41", True, "pmaddubsw adds pairs of u8 x s8 products in a saturating int16")
    if cpu.has("avx2", "fma"):
        kernel = Int8Kernel("avx2", True, pair16)
        if cpu.has("avx_vnni"):
            kernel = Int8Kernel("avx-vnni", False, "vpdpbusd accumulates 4 byte products into int32")
        if cpu.has(*_AVX512_CORE):
            kernel = Int8Kernel("avx512core", True, pair16)
            if cpu.has("avx512_vnni"):
                kernel = Int8Kernel("avx512-vnni", False, "vpdpbusds accumulates 4 byte products into int32")
        if cpu.has("amx_int8", "amx_tile"):
            kernel = Int8Kernel("amx", False, "AMX tile dot products accumulate into int32")
    return kernel


def _numpy_features() -> set[str] | None:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as found
        except ImportError:
            return None
    return {_NUMPY_NAMES[k] for k, on in found.items() if on and k in _NUMPY_NAMES}


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(model name, flags) from ``/proc/cpuinfo`` text: x86 ``flags``, arm64 ``Features`` (first CPU)."""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _read_cpu(cpuinfo: Path) -> CpuFacts:
    machine = platform.machine() or "unknown"
    from_numpy = _numpy_features()
    try:
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        model, flags = None, set()
    features: set[str] = set(from_numpy or ())
    source = "cpuid" if from_numpy is not None else "unknown"
    if flags:
        arm = {_CPUINFO_ARM[f] for f in flags if f in _CPUINFO_ARM}
        if arm:
            features |= arm
            source = "cpuinfo" if from_numpy is None else source + "+cpuinfo"
        elif from_numpy is None:
            features |= {f for f in flags if f in set(_NUMPY_NAMES.values()) | set(_CPUINFO_EXTRA)}
            source = "cpuinfo"
        elif all((f in flags) == (f in features) for f in _CROSSCHECK):
            # the same CPU as CPUID describes (not an emulator's guest): take the flags numpy cannot see
            features |= {_CPUINFO_EXTRA[f] for f in flags if f in _CPUINFO_EXTRA}
            source = "cpuid+cpuinfo"
        elif model:
            model += " (per /proc/cpuinfo; CPUID reports other features: an emulated CPU)"
    if sys.platform == "darwin":
        model = model or _sysctl("machdep.cpu.brand_string")
        if _sysctl("hw.optional.arm.FEAT_DotProd") == "1":
            features |= {"neon", "dotprod"}
            source = "sysctl"
        if _sysctl("hw.optional.arm.FEAT_I8MM") == "1":
            features.add("i8mm")
    return CpuFacts(model or platform.processor() or machine, machine, tuple(sorted(features)), source)


@functools.cache
def this_cpu() -> CpuFacts:
    """This process's CPU (cached: it does not change while the process runs)."""
    return _read_cpu(Path("/proc/cpuinfo"))


def describe(cpu: CpuFacts | None = None) -> dict[str, Any]:
    """The ``verification_host``-style record: CPU, its int8-relevant features and ONNX Runtime's int8 kernel."""
    cpu = cpu or this_cpu()
    kernel = int8_kernel(cpu)
    return asdict(cpu) | {"features": list(cpu.features), "onnxruntime_int8_kernel": asdict(kernel)}


def isa_label(cpu: CpuFacts | None = None) -> str:
    """One line for a table header: 'AMD EPYC (x86_64: avx2 avx512_vnni ...; ORT int8: avx512-vnni)'."""
    cpu = cpu or this_cpu()
    shown = [f for f in cpu.features if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "dotprod")]
    kernel = int8_kernel(cpu)
    sat = "saturating" if kernel.saturates else "exact"
    return (
        f"{cpu.model} ({cpu.machine}: {' '.join(shown) or 'no int8 extensions'}; ORT int8 kernel {kernel.name}, {sat})"
    )
