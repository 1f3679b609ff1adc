package org.mpk.bench.contract

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Reads the spec's reference tensors: raw little-endian files holding N samples stacked along a new leading
 * axis (runner_spec.schema.json, reference.inputs[].path). Every dtype is widened to Float for the runtimes'
 * float inputs and for the accuracy maths; int64/int32 inputs are also kept as longs for integer-input models.
 */
object TensorIO {
    private fun elementBytes(dtype: String): Int = when (dtype) {
        "float32", "int32" -> 4
        "int64" -> 8
        else -> throw IllegalArgumentException("unsupported reference dtype '$dtype'")
    }

    /** One FloatArray per sample, each of [TensorFile.sampleElements] values. */
    fun readSamples(file: File, t: TensorFile, samples: Int): List<FloatArray> {
        val per = t.sampleElements
        val want = per.toLong() * samples * elementBytes(t.dtype)
        val bytes = file.readBytes()
        require(bytes.size.toLong() == want) {
            "${t.path}: expected $want bytes ($samples x ${t.shape} ${t.dtype}), found ${bytes.size}"
        }
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN)
        return List(samples) {
            FloatArray(per) {
                when (t.dtype) {
                    "float32" -> buf.float
                    "int32" -> buf.int.toFloat()
                    else -> buf.long.toFloat()
                }
            }
        }
    }

    /** int64 samples kept exact (token ids do not survive a trip through Float). */
    fun readLongSamples(file: File, t: TensorFile, samples: Int): List<LongArray> {
        val per = t.sampleElements
        val buf = ByteBuffer.wrap(file.readBytes()).order(ByteOrder.LITTLE_ENDIAN)
        return List(samples) { LongArray(per) { if (t.dtype == "int64") buf.long else buf.int.toLong() } }
    }
}
