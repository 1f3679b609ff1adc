package org.mpk.bench.device

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.os.BatteryManager
import android.os.Build
import java.io.File
import org.mpk.bench.contract.CpuInt8
import org.mpk.bench.contract.DeviceFacts

/**
 * What the phone is, read from Build and sysfs. Every sysfs read is best effort: vendors lock
 * different files down under SELinux, and a missing governor is reported as null, never guessed.
 */
object DeviceInfo {
    fun facts(context: Context, temperaturesBefore: Map<String, Double>, temperaturesAfter: Map<String, Double>): DeviceFacts {
        val abi = Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown"
        val features = readText("/proc/cpuinfo")?.let { CpuInt8.features(it) }
        return DeviceFacts(
            model = Build.MODEL,
            manufacturer = Build.MANUFACTURER,
            soc = if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else null,
            abi = abi,
            os = "android",
            osVersion = Build.VERSION.RELEASE,
            cores = cpuCount(),
            governor = readText("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            cpuMaxFreqKhz = (0 until cpuCount())
                .mapNotNull { readText("/sys/devices/system/cpu/cpu$it/cpufreq/cpuinfo_max_freq")?.toIntOrNull() }
                .takeIf { it.isNotEmpty() },
            hostCpu = if (isEmulator()) hostCpu() else null,
            temperaturesCBefore = temperaturesBefore,
            temperaturesCAfter = temperaturesAfter,
            battery = battery(context),
            cpuFeatures = features,
            int8Kernel = features?.let { CpuInt8.kernel(abi, it) }
        )
    }

    /** Cores present, not just online: big cores may be hot-unplugged while idle. */
    fun cpuCount(): Int {
        val present = File("/sys/devices/system/cpu").listFiles { f -> f.name.matches(Regex("cpu[0-9]+")) }
        return present?.size?.takeIf { it > 0 } ?: Runtime.getRuntime().availableProcessors()
    }

    /** Thermal zones by type, in degrees C (sysfs reports millidegrees on almost every vendor). */
    fun temperatures(): Map<String, Double> {
        val zones = File("/sys/class/thermal").listFiles { f -> f.name.startsWith("thermal_zone") } ?: return emptyMap()
        val out = LinkedHashMap<String, Double>()
        for (z in zones.sortedBy { it.name }) {
            val type = readText("${z.path}/type") ?: z.name
            val raw = readText("${z.path}/temp")?.toDoubleOrNull() ?: continue
            val c = if (raw > 1000 || raw < -1000) raw / 1000.0 else raw
            if (c > -50 && c < 200) out[if (out.containsKey(type)) "$type/${z.name}" else type] = c
        }
        return out
    }

    /**
     * True on the Android emulator. The fingerprint test catches the stock images; ro.kernel.qemu catches
     * images with a custom fingerprint. Numbers from an emulator are the host CPU's, and results say so.
     */
    fun isEmulator(): Boolean {
        val fp = Build.FINGERPRINT.lowercase()
        return fp.contains("generic") || fp.contains("emulator") || getprop("ro.kernel.qemu") == "1" ||
            Build.HARDWARE == "ranchu" || Build.HARDWARE == "goldfish"
    }

    private fun hostCpu(): String? =
        File("/proc/cpuinfo").takeIf { it.canRead() }?.readLines()
            ?.firstOrNull { it.startsWith("model name") }?.substringAfter(":")?.trim()

    private fun battery(context: Context): Map<String, Any?>? {
        val i: Intent = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED)) ?: return null
        val level = i.getIntExtra(BatteryManager.EXTRA_LEVEL, -1)
        val scale = i.getIntExtra(BatteryManager.EXTRA_SCALE, -1)
        val temp = i.getIntExtra(BatteryManager.EXTRA_TEMPERATURE, Int.MIN_VALUE)
        return linkedMapOf(
            "level_pct" to if (level >= 0 && scale > 0) 100.0 * level / scale else null,
            "temperature_c" to if (temp != Int.MIN_VALUE) temp / 10.0 else null,
            "plugged" to (i.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0) != 0)
        )
    }

    private fun getprop(name: String): String? = try {
        val p = ProcessBuilder("getprop", name).redirectErrorStream(true).start()
        p.inputStream.bufferedReader().readText().trim().also { p.waitFor() }
    } catch (e: Exception) {
        null
    }

    private fun readText(path: String): String? = try {
        File(path).readText().trim().takeIf { it.isNotEmpty() }
    } catch (e: Exception) {
        null
    }
}
