package org.mpk.bench.runtime

import java.io.File
import org.mpk.bench.BuildConfig
import org.mpk.bench.contract.ArtifactSpec
import org.mpk.bench.contract.InputTensor
import org.mpk.bench.contract.ModelRunner
import org.mpk.bench.contract.Profiles
import org.mpk.bench.contract.ResultKeys
import org.mpk.bench.contract.RuntimeHost
import org.mpk.bench.contract.UnsupportedBackend

/**
 * The runtimes this app links, keyed by the spec's artifact backend. Versions are the Gradle properties the AARs
 * were resolved from (gradle.properties: mpk.executorchVersion, mpk.onnxruntimeVersion), so the result reports
 * exactly what was linked; the same values are in the app's versionName for `mpk bench` to read before it pushes.
 */
object AndroidRuntimes : RuntimeHost {
    override val versions: Map<String, String> = linkedMapOf(
        ResultKeys.Runtimes.EXECUTORCH to BuildConfig.EXECUTORCH_VERSION,
        ResultKeys.Runtimes.ONNXRUNTIME to BuildConfig.ONNXRUNTIME_VERSION
    )

    override fun preload(backend: String) {
        when (backend) {
            "executorch" -> ExecuTorchRunner.preload()
            "onnx" -> OrtRunner.preload()
            else -> throw unsupported(backend)
        }
    }

    override fun open(artifact: ArtifactSpec, file: File, threads: Int): ModelRunner = when (artifact.backend) {
        "executorch" -> ExecuTorchRunner(file, threads)
        "onnx" -> OrtRunner(file, threads, artifact.inputs.map { it.name })
        else -> throw unsupported(artifact.backend)
    }

    override fun profile(
        artifact: ArtifactSpec, file: File, threads: Int, inputs: List<InputTensor>, runs: Int, warmup: Int,
        workDir: File
    ): MutableMap<String, Any?> = when (artifact.backend) {
        "onnx" -> {
            val r = OrtRunner(file, threads, artifact.inputs.map { it.name }, File(workDir, artifact.id).absolutePath)
            try {
                Profiles.ortProfile({ r.run(inputs) }, { r.endProfiling() },
                    "onnxruntime " + BuildConfig.ONNXRUNTIME_VERSION, runs, warmup)
            } finally {
                r.close()
            }
        }
        "executorch" -> {
            val r = ExecuTorchRunner(file, threads)
            try {
                for (i in 0 until warmup + runs) r.run(inputs)
                val dump = File(workDir, artifact.id + ".etdump").absolutePath
                Profiles.executorchEtdump(r.etdump(dump), dump, BuildConfig.EXECUTORCH_VERSION)
            } finally {
                r.close()
            }
        }
        else -> throw unsupported(artifact.backend)
    }

    private fun unsupported(backend: String) =
        UnsupportedBackend("backend '$backend' does not run on Android (CoreML is iOS-only)")
}
