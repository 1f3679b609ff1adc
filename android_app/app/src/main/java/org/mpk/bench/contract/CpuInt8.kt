package org.mpk.bench.contract

/**
 * The CPU features int8 kernels depend on, and the u8 x s8 kernel ONNX Runtime picks on them: the same rules
 * as mpk/hostcpu.py (ORT 1.31's MLAS platform.cpp), checked against it by mpk's tests. On a phone (arm64)
 * the kernel never saturates; an x86 emulator image on a host without VNNI does, and results say so.
 */
object CpuInt8 {
    private val ARM = mapOf("asimd" to "neon", "asimddp" to "dotprod", "i8mm" to "i8mm")
    private val X86 = setOf(
        "sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
        "amx_int8", "amx_tile"
    )
    private val AVX512_CORE = listOf("avx512f", "avx512bw", "avx512dq", "avx512vl")

    /** Features from /proc/cpuinfo text: the first `Features` (arm64) or `flags` (x86) line, mpk's names. */
    fun features(cpuinfo: String): List<String> {
        val line = cpuinfo.lineSequence().firstOrNull {
            val key = it.substringBefore(":").trim().toLowerCase()
            key == "features" || key == "flags"
        } ?: return emptyList()
        val flags = line.substringAfter(":").trim().split(Regex("\\s+")).toSet()
        return (flags.mapNotNull { ARM[it] } + flags.filter { it in X86 }).toSortedSet().toList()
    }

    /** (kernel name, saturates) for an ABI ("arm64-v8a", "x86_64") and [features]. */
    fun kernel(abi: String, features: List<String>): Pair<String, Boolean> {
        val has = { names: List<String> -> names.all { it in features } }
        if (abi.startsWith("arm64") || abi.startsWith("aarch64")) {
            return if ("dotprod" in features) "arm64-udot" to false else "arm64-neon" to false
        }
        if (!abi.startsWith("x86")) return "generic" to false
        var k = if ("sse4_1" in features) "sse41" to true else "sse2" to false
        if (has(listOf("avx2", "fma"))) {
            k = "avx2" to true
            if ("avx_vnni" in features) k = "avx-vnni" to false
            if (has(AVX512_CORE)) {
                k = "avx512core" to true
                if ("avx512_vnni" in features) k = "avx512-vnni" to false
            }
            if (has(listOf("amx_int8", "amx_tile"))) k = "amx" to false
        }
        return k
    }
}
