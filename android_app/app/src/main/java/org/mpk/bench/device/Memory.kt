package org.mpk.bench.device

import android.os.Debug
import java.io.File

/**
 * Memory readings with the contract's ONE definition (runner_result.schema.json): peak_rss = VmHWM of this
 * process, baseline = VmRSS before the model is loaded, MB = 2^20 bytes. PSS (Android-only) comes from
 * Debug.getPss(), which counts shared pages proportionally: the fairest "what this app costs" number.
 */
object Memory {
    const val SOURCE = "/proc/self/status VmHWM, VmRSS; Debug.getPss()"

    /** kB field of /proc/self/status as MB, or null if the kernel hides it. */
    fun statusMb(field: String): Double? =
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("$field:") }
            ?.split(Regex("\\s+"))?.getOrNull(1)?.toDoubleOrNull()?.div(1024.0)

    fun rssMb(): Double = statusMb("VmRSS") ?: 0.0

    fun hwmMb(): Double = statusMb("VmHWM") ?: rssMb()

    fun pssMb(): Double = Debug.getPss() / 1024.0

    /**
     * Reset VmHWM to the current RSS so the next artifact's peak is its own, not the max over every artifact
     * run so far in this process. Writing "5" to clear_refs does that (Linux >= 4.0, own process, no root).
     * Returns false where the kernel refuses; the result's memory.source then says the peak may be inherited.
     */
    fun resetPeak(): Boolean = try {
        File("/proc/self/clear_refs").writeText("5")
        true
    } catch (e: Exception) {
        false
    }
}
