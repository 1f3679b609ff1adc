package org.mpk.bench.contract

import java.io.File

/** A flat tensor. [longs] is set for int64 inputs (token ids must not pass through Float). */
class InputTensor(val shape: LongArray, val floats: FloatArray?, val longs: LongArray? = null)

/**
 * One loaded model, behind one interface so the measuring sequence does not care which runtime runs it.
 * Inputs are one sample's tensors in the artifact's input order; outputs come back as flat floats, one array per
 * model output, in the model's output order.
 */
interface ModelRunner : AutoCloseable {
    fun run(inputs: List<InputTensor>): List<FloatArray>
}

/** The runtimes an app links. Android: runtime/AndroidRuntimes.kt; the JVM test harness: a fake. */
interface RuntimeHost {
    /** Runtime name (the schema's runner.runtimes keys: "executorch", "onnxruntime") -> linked version. */
    val versions: Map<String, String>

    /** Load [backend]'s native libraries now, so that the pre-load memory baseline already includes them. */
    fun preload(backend: String)

    /** Load [file] (the artifact's main file) and make it ready to run; throws [UnsupportedBackend] if not linked. */
    fun open(artifact: ArtifactSpec, file: File, threads: Int): ModelRunner

    /**
     * A separate profiled pass of [file] on a session of its own, after the timed loop: the runtime's own per-op
     * timings ([Profiles.measured]), or [Profiles.unavailable] saying what it cannot do. [workDir] is the app's
     * own folder for the runtime's profile files. Default: no profiler for this backend.
     */
    fun profile(
        artifact: ArtifactSpec, file: File, threads: Int, inputs: List<InputTensor>, runs: Int, warmup: Int,
        workDir: File
    ): MutableMap<String, Any?> =
        Profiles.unavailable("no profiler for ${artifact.backend} artifacts in this runner", emptyList())
}

/** The app's process memory, in MB (2^20 bytes). Android: device/Memory.kt. */
interface MemoryProbe {
    /** Reset the peak counter to the current resident set; false where the OS refuses. */
    fun resetPeak(): Boolean

    fun residentMb(): Double

    fun peakMb(): Double

    /** Proportional set size where the OS has one (Android), else null. */
    fun pssMb(): Double?

    /** How the numbers were read, for the result's memory.source. */
    val source: String
}

class UnsupportedBackend(message: String) : RuntimeException(message)
