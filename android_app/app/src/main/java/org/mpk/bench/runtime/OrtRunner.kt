package org.mpk.bench.runtime

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer
import org.mpk.bench.contract.InputTensor
import org.mpk.bench.contract.ModelRunner

/**
 * ONNX Runtime through com.microsoft.onnxruntime:onnxruntime-android, CPU execution provider (API checked against
 * upstream, android_app/README.md "Runtime APIs used").
 *
 * intra-op threads = the spec's threads and inter-op = 1, the same session options as the host runner,
 * so a thread count means the same thing on both. Inputs are bound by the manifest's names and order;
 * outputs come back in the model's declared order.
 */
class OrtRunner(file: File, threads: Int, specInputNames: List<String>, profilePath: String? = null) : ModelRunner {
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val session: OrtSession
    private val inputNames: List<String>

    init {
        val opts = OrtSession.SessionOptions()
        opts.setIntraOpNumThreads(threads)
        opts.setInterOpNumThreads(1)
        // the profiled pass only (contract/Profile.kt): otherwise the very options of the timed loop
        if (profilePath != null) opts.enableProfiling(profilePath)
        session = env.createSession(file.absolutePath, opts)
        // The manifest's names win when present; otherwise the model's own declared order.
        inputNames = if (specInputNames.isNotEmpty()) specInputNames else session.inputNames.toList()
    }

    override fun run(inputs: List<InputTensor>): List<FloatArray> {
        require(inputs.size == inputNames.size) { "model has ${inputNames.size} inputs, got ${inputs.size}" }
        val tensors = inputs.map { t ->
            val longs = t.longs
            if (longs != null) OnnxTensor.createTensor(env, LongBuffer.wrap(longs), t.shape)
            else OnnxTensor.createTensor(env, FloatBuffer.wrap(t.floats!!), t.shape)
        }
        try {
            val result = session.run(inputNames.zip(tensors).toMap())
            try {
                return (0 until result.size()).map { i ->
                    val v = result.get(i) as OnnxTensor
                    val fb = v.floatBuffer
                    FloatArray(fb.remaining()).also { fb.get(it) }
                }
            } finally {
                result.close()
            }
        } finally {
            tensors.forEach { it.close() }
        }
    }

    /** Ends profiling and returns the file ORT wrote its profile to (a session made with a profilePath). */
    fun endProfiling(): String = session.endProfiling()

    override fun close() {
        session.close()
    }

    companion object {
        /** Loads libonnxruntime.so and creates the process-wide environment, so the memory baseline includes it. */
        fun preload() {
            OrtEnvironment.getEnvironment()
        }
    }
}
