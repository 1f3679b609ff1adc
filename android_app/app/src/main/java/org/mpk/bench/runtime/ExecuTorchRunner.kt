package org.mpk.bench.runtime

import java.io.File
import org.mpk.bench.contract.InputTensor
import org.mpk.bench.contract.ModelRunner
import org.pytorch.executorch.EValue
import org.pytorch.executorch.ExecuTorchRuntime
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * ExecuTorch through its Android AAR (org.pytorch:executorch-android; API checked against the pinned release,
 * android_app/README.md "Runtime APIs used").
 *
 * Threads: Module.load's numThreads sizes the XNNPACK thread pool for this module; that is the only
 * knob the Java API exposes. mmap load mode keeps the .pte's weights file-backed, which is what a
 * production app would do and what makes peak RSS comparable with the host runner.
 */
class ExecuTorchRunner(file: File, threads: Int) : ModelRunner {
    private val module: Module = Module.load(file.absolutePath, Module.LOAD_MODE_MMAP, threads)

    init {
        // Method loading is lazy; doing it here puts its cost into load_ms, not into the first inference.
        module.loadMethod("forward")
    }

    override fun run(inputs: List<InputTensor>): List<FloatArray> {
        val values = inputs.map { t ->
            val longs = t.longs
            val tensor = if (longs != null) Tensor.fromBlob(longs, t.shape) else Tensor.fromBlob(t.floats!!, t.shape)
            EValue.from(tensor)
        }
        val out = module.forward(*values.toTypedArray())
        return out.filter { it.isTensor }.map { it.toTensor().dataAsFloatArray }
    }

    /** Writes the ETDump of the runs so far to [path]; false when the AAR has no event tracer (its default). */
    fun etdump(path: String): Boolean = module.etdump(path)

    override fun close() {
        module.destroy()
    }

    companion object {
        /** Loads libexecutorch.so (ExecuTorchRuntime's initializer), so the memory baseline includes it. */
        fun preload() {
            ExecuTorchRuntime.getRuntime()
        }
    }
}
