package org.mpk.bench.device

import android.os.Debug
import java.io.File
import org.mpk.bench.contract.MemoryProbe

/**
 * Memory readings with the contract's ONE definition (runner_result.schema.json; the order is
 * contract/Measure.kt's): peak = VmHWM of this process, resident = VmRSS, MB = 2^20 bytes. PSS (Android-only)
 * comes from Debug.getPss(), which counts shared pages proportionally: the fairest "what this app costs" number.
 */
object Memory : MemoryProbe {
    override val source = "/proc/self/status VmHWM, VmRSS; Debug.getPss()"

    /** kB field of /proc/self/status as MB, or null if the kernel hides it. */
    fun statusMb(field: String): Double? =
        File("/proc/self/status").readLines().firstOrNull { it.startsWith("$field:") }
            ?.split(Regex("\\s+"))?.getOrNull(1)?.toDoubleOrNull()?.div(1024.0)

    override fun residentMb(): Double = statusMb("VmRSS") ?: 0.0

    override fun peakMb(): Double = statusMb("VmHWM") ?: residentMb()

    override fun pssMb(): Double = Debug.getPss() / 1024.0

    /**
     * Reset VmHWM to the current RSS so the next artifact's peak is its own, not the max over every artifact
     * run so far in this process. Writing "5" to clear_refs does that (Linux >= 4.0, own process, no root).
     * Returns false where the kernel refuses; the result's memory.source then says the peak may be inherited.
     */
    override fun resetPeak(): Boolean = try {
        File("/proc/self/clear_refs").writeText("5")
        true
    } catch (e: Exception) {
        false
    }
}
