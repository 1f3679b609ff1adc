package org.mpk.bench.contract

/**
 * The app's own check, before it loads an artifact, that its linked runtime can load it: the same rules as
 * runners/compat.py (which `mpk bench` applies before pushing), from the requirement the manifest recorded
 * (packager/runtime_requirements.py) and the spec carries. mpk's CI compares the two case by case.
 *  - executorch: ExecuTorch guarantees no forward compatibility (runtime/COMPATIBILITY.md), so a runtime older
 *    (major.minor) than the exporter's is refused; ExecuTorch 1.0..1.4 load only programs whose flatbuffer file
 *    identifier is "ET12" (schema/program.fbs).
 *  - onnxruntime: a runtime older (major.minor) than the model's min_version is refused (min_version is the
 *    oldest ONNX Runtime whose IR version and opsets cover the model). A null min_version means no release up to
 *    the newest in mpk's table ([NEWEST_TABULATED_ORT]) covers it: those are refused, newer ones are not judged.
 * Returns null when the runtime can load it, or cannot be judged (no requirement, runtime not linked).
 */
object Compat {
    const val ET_FILE_IDENTIFIER = "ET12"

    /** The newest ONNX Runtime in packager/runtime_requirements.py ORT_BUNDLED_ONNX (a test keeps them equal). */
    val NEWEST_TABULATED_ORT = intArrayOf(1, 20)

    fun refusal(req: RuntimeRequirement?, linked: Map<String, String>): String? {
        if (req == null) return null
        val have = linked[req.runtime] ?: return null
        val need = req.minVersion
        when (req.runtime) {
            "executorch" -> {
                val id = req.fileIdentifier
                val h = minor(have)
                if (id != null && compare(h, intArrayOf(1, 0)) >= 0 && compare(h, intArrayOf(1, 4)) <= 0 &&
                    id != ET_FILE_IDENTIFIER
                ) {
                    return "the .pte's file identifier is '$id' but ExecuTorch $have loads only '$ET_FILE_IDENTIFIER'"
                }
                if (need != null && compare(h, minor(need)) < 0) {
                    return "the .pte needs ExecuTorch >= $need; this app links ExecuTorch $have " +
                        "(ExecuTorch guarantees no forward compatibility)"
                }
            }
            "onnxruntime" -> {
                val h = minor(have)
                if (need != null && compare(h, minor(need)) < 0) {
                    return "the model needs ONNX Runtime >= $need; this app links ONNX Runtime $have"
                }
                if (need == null && compare(h, NEWEST_TABULATED_ORT) <= 0) {
                    return "the model needs an ONNX Runtime newer than ${NEWEST_TABULATED_ORT.joinToString(".")}; " +
                        "this app links ONNX Runtime $have"
                }
            }
        }
        return null
    }

    /** "1.24.3" -> [1, 24]; "1.4.0a0" -> [1, 4]; non-numeric parts end the version. */
    fun minor(v: String): IntArray {
        val parts = v.trim().split(".").map { p -> p.takeWhile { it.isDigit() } }
        val major = parts.getOrNull(0)?.toIntOrNull() ?: 0
        val minor = parts.getOrNull(1)?.toIntOrNull() ?: 0
        return intArrayOf(major, minor)
    }

    private fun compare(a: IntArray, b: IntArray): Int = if (a[0] != b[0]) a[0].compareTo(b[0]) else a[1].compareTo(b[1])
}
