package org.mpk.bench.contract

/** Device facts as runner_result.schema.json $defs.device_facts describes them. */
data class DeviceFacts(
    val model: String,
    val manufacturer: String?,
    val soc: String?,
    val abi: String,
    val os: String,
    val osVersion: String?,
    val cores: Int,
    val governor: String?,
    val cpuMaxFreqKhz: List<Int>?,
    val hostCpu: String?,
    val temperaturesCBefore: Map<String, Double>,
    val temperaturesCAfter: Map<String, Double>,
    val battery: Map<String, Any?>?,
    /** CPU features int8 kernels depend on and ORT's int8 kernel on them ([CpuInt8]); null where unreadable */
    val cpuFeatures: List<String>? = null,
    val int8Kernel: Pair<String, Boolean>? = null
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        ResultKeys.Device.MODEL to model,
        ResultKeys.Device.MANUFACTURER to manufacturer,
        ResultKeys.Device.SOC to soc,
        ResultKeys.Device.ABI to abi,
        ResultKeys.Device.OS to os,
        ResultKeys.Device.OS_VERSION to osVersion,
        ResultKeys.Device.CORES to cores,
        ResultKeys.Device.GOVERNOR to governor,
        ResultKeys.Device.CPU_MAX_FREQ_KHZ to cpuMaxFreqKhz,
        ResultKeys.Device.HOST_CPU to hostCpu,
        ResultKeys.Device.TEMPERATURES_C_BEFORE to temperaturesCBefore,
        ResultKeys.Device.TEMPERATURES_C_AFTER to temperaturesCAfter,
        ResultKeys.Device.BATTERY to battery,
        ResultKeys.Device.CPU_FEATURES to cpuFeatures,
        ResultKeys.Device.INT8_KERNEL to int8Kernel?.let {
            linkedMapOf(ResultKeys.Int8Kernel.NAME to it.first, ResultKeys.Int8Kernel.SATURATES to it.second)
        }
    )
}

/**
 * Memory with the schema's ONE definition: peak resident set of this process over load and inference
 * (VmHWM), baseline = VmRSS before the model was loaded, rise = peak - baseline. MB = 2^20 bytes.
 */
data class MemoryReading(val baselineRssMb: Double, val peakRssMb: Double, val pssMb: Double?, val source: String) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        ResultKeys.Memory.BASELINE_RSS_MB to baselineRssMb,
        ResultKeys.Memory.PEAK_RSS_MB to peakRssMb,
        ResultKeys.Memory.RISE_MB to peakRssMb - baselineRssMb,
        ResultKeys.Memory.PSS_MB to pssMb,
        ResultKeys.Memory.SOURCE to source
    )
}

/** Why an artifact failed; the names are the schema's error.kind enum. */
enum class ErrorKind(val wire: String) {
    LOAD("load"), INFERENCE("inference"), OOM("oom"), UNSUPPORTED("unsupported"),
    TIMEOUT("timeout"), CRASH("crash"), OTHER("other")
}

/** What measuring one artifact produced: either timings (status ok) or an error, never a crash of the app. */
class ArtifactOutcome(
    val artifact: ArtifactSpec,
    val errorKind: ErrorKind? = null,
    val errorMessage: String? = null,
    val loadMs: Double? = null,
    val firstInferenceMs: Double? = null,
    val warmupIterations: Int = 0,
    val samplesMs: DoubleArray = DoubleArray(0),
    val memory: MemoryReading? = null,
    val accuracy: Map<String, Any?>? = null,
    /** the profiled pass (contract/Profile.kt), when the spec asked for one */
    val profile: Map<String, Any?>? = null
) {
    val ok: Boolean get() = errorKind == null

    fun withProfile(p: Map<String, Any?>): ArtifactOutcome = ArtifactOutcome(
        artifact, errorKind, errorMessage, loadMs, firstInferenceMs, warmupIterations, samplesMs, memory, accuracy, p
    )

    fun toMap(): Map<String, Any?> {
        val stats = if (ok && samplesMs.isNotEmpty()) LatencyStats.fromSamples(samplesMs).toMap() else null
        val error = if (ok) null else linkedMapOf(
            ResultKeys.Error.KIND to errorKind!!.wire,
            ResultKeys.Error.MESSAGE to (errorMessage ?: errorKind.wire)
        )
        return linkedMapOf(
            ResultKeys.Artifact.ID to artifact.id,
            ResultKeys.Artifact.BACKEND to artifact.backend,
            ResultKeys.Artifact.SCHEME to artifact.scheme,
            ResultKeys.Artifact.STATUS to if (ok) "ok" else "error",
            ResultKeys.Artifact.ERROR to error,
            ResultKeys.Artifact.LOAD_MS to loadMs,
            ResultKeys.Artifact.FIRST_INFERENCE_MS to firstInferenceMs,
            ResultKeys.Artifact.WARMUP_ITERATIONS to warmupIterations,
            ResultKeys.Artifact.ITERATIONS to samplesMs.size,
            ResultKeys.Artifact.SAMPLES_MS to samplesMs.toList(),
            ResultKeys.Artifact.STATS to stats,
            ResultKeys.Artifact.MEMORY to memory?.toMap(),
            ResultKeys.Artifact.ACCURACY to accuracy,
            ResultKeys.Artifact.PROFILE to profile
        )
    }
}

/** Assembles result.json (runner_result.schema.json) from typed parts. */
object ResultWriter {
    fun build(
        spec: Spec,
        runnerName: String,
        runnerVersion: String,
        runtimes: Map<String, String>,
        emulated: Boolean,
        device: DeviceFacts,
        startedUtc: String,
        finishedUtc: String,
        outcomes: List<ArtifactOutcome>
    ): Map<String, Any?> {
        val s = spec.settings
        return linkedMapOf(
            ResultKeys.Top.SCHEMA_VERSION to ResultKeys.SCHEMA_VERSION_VALUE,
            ResultKeys.Top.RUN_ID to spec.runId,
            ResultKeys.Top.DEVICE_ID to spec.deviceId,
            ResultKeys.Top.RUNNER to linkedMapOf(
                ResultKeys.Runner.NAME to runnerName,
                ResultKeys.Runner.VERSION to runnerVersion,
                ResultKeys.Runner.RUNTIMES to runtimes
            ),
            ResultKeys.Top.EMULATED to emulated,
            ResultKeys.Top.DEVICE to device.toMap(),
            ResultKeys.Top.SETTINGS to linkedMapOf(
                ResultKeys.Settings.THREADS to s.threads,
                ResultKeys.Settings.CPU_AFFINITY to s.cpuAffinity,
                ResultKeys.Settings.WARMUP_ITERATIONS to s.warmupIterations,
                ResultKeys.Settings.MIN_ITERATIONS to s.minIterations,
                ResultKeys.Settings.MIN_SECONDS to s.minSeconds,
                ResultKeys.Settings.MAX_SECONDS to s.maxSeconds,
                ResultKeys.Settings.PROFILE to s.profile
            ),
            ResultKeys.Top.STARTED_UTC to startedUtc,
            ResultKeys.Top.FINISHED_UTC to finishedUtc,
            ResultKeys.Top.ARTIFACTS to outcomes.map { it.toMap() }
        )
    }
}
