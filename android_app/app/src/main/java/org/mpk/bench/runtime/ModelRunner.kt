package org.mpk.bench.runtime

import java.io.File
import org.mpk.bench.contract.ArtifactSpec

/**
 * One loaded model, behind one interface so the benchmark loop does not care which runtime runs it.
 * Inputs are one sample's tensors in the artifact's input order, as flat floats plus their shape;
 * outputs come back as flat floats, one array per model output.
 */
interface ModelRunner : AutoCloseable {
    fun run(inputs: List<InputTensor>): List<FloatArray>
}

/** A flat tensor. [longs] is set for int64 inputs (token ids must not pass through Float). */
class InputTensor(val shape: LongArray, val floats: FloatArray?, val longs: LongArray? = null)

/** The runtimes this app links, keyed by the spec's artifact backend. */
object Runtimes {
    fun open(artifact: ArtifactSpec, file: File, threads: Int): ModelRunner = when (artifact.backend) {
        "executorch" -> ExecuTorchRunner(file, threads)
        "onnx" -> OrtRunner(file, threads, artifact.inputs.map { it.name })
        else -> throw UnsupportedBackend("backend '${artifact.backend}' does not run on Android (CoreML is iOS-only)")
    }
}

class UnsupportedBackend(message: String) : RuntimeException(message)
