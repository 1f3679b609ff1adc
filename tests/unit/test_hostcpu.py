"""mpk/hostcpu.py: CPU features as int8 kernels see them, and ONNX Runtime's kernel choice.

The cpuinfo texts are excerpts of real /proc/cpuinfo files (an AVX2-only AMD EPYC 7B12, an AVX-512 VNNI
Xeon, an arm64 Cortex-A76 phone SoC). Parsing them is not mocking a machine: it is what this module does on one.
"""

from __future__ import annotations

import pytest

from mpk.hostcpu import CpuFacts, describe, int8_kernel, isa_label, parse_cpuinfo, this_cpu

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand avx2 bmi2 sha_ni
"""
XEON_VNNI = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni amx_int8 amx_tile
"""
ARM64 = """processor\t: 0
BogoMIPS\t: 52.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


def test_parse_cpuinfo_reads_x86_flags_and_arm_features() -> None:
    model, flags = parse_cpuinfo(EPYC_AVX2)
    assert model == "AMD EPYC 7B12" and {"avx2", "fma", "sse4_1"} <= flags and "avx512f" not in flags
    model, flags = parse_cpuinfo(XEON_VNNI)
    assert model.startswith("Intel(R) Xeon(R)") and {"avx512_vnni", "amx_int8"} <= flags
    model, flags = parse_cpuinfo(ARM64)
    assert model is None and {"asimd", "asimddp"} <= flags


@pytest.mark.parametrize(
    ("machine", "features", "kernel", "saturates"),
    [
        ("x86_64", ("sse4_1", "avx", "avx2", "fma"), "avx2", True),  # the AVX2-only EPYC of issue #10
        ("x86_64", ("sse4_1", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"), "avx512core", True),
        ("x86_64", ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"), "avx512-vnni", False),
        ("x86_64", ("avx2", "fma", "avx_vnni"), "avx-vnni", False),  # Alder Lake: VEX-encoded VNNI
        (
            "x86_64",
            ("avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "amx_int8", "amx_tile"),
            "amx",
            False,
        ),
        ("x86_64", ("sse4_1",), "sse41", True),
        ("aarch64", ("neon", "dotprod"), "arm64-udot", False),  # a phone
        ("arm64", ("neon",), "arm64-neon", False),
    ],
)
def test_int8_kernel_follows_onnxruntime_precedence(machine, features, kernel, saturates) -> None:
    k = int8_kernel(CpuFacts("cpu", machine, features))
    assert (k.name, k.saturates) == (kernel, saturates)
    assert k.why


def test_this_cpu_is_self_consistent() -> None:
    """Whatever this machine is, the record agrees with itself (no ISA assumed)."""
    cpu = this_cpu()
    assert list(cpu.features) == sorted(set(cpu.features))
    d = describe(cpu)
    assert d["onnxruntime_int8_kernel"]["name"] == int8_kernel(cpu).name
    assert d["features"] == list(cpu.features)
    assert int8_kernel(cpu).name in isa_label(cpu)
    if cpu.arch == "x86" and cpu.source.startswith("cpuid"):
        assert "avx" in cpu.features or "sse4_1" in cpu.features  # every x86-64 CI machine has SSE4.1
