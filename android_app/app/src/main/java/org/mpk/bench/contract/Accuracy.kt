package org.mpk.bench.contract

import kotlin.math.abs
import kotlin.math.log10
import kotlin.math.min
import kotlin.math.sqrt

/**
 * On-device agreement with the fp32 reference, defined exactly like runners/host_runner.py accuracy_metrics so
 * the host and the phone report the same numbers for the same outputs:
 *  - all outputs of all samples are flattened into one vector (float64 accumulation);
 *  - cosine = dot(p, r) / (|p| |r|), capped at 1.0;
 *  - snr_db = 10 log10(sum r^2 / sum (p-r)^2); a perfect match is 200 dB (JSON has no infinity);
 *  - top1_agreement = fraction of samples whose argmax of the FIRST output matches the reference's, only for
 *    classification (or, with no task given, when the first output looks like (1, C) logits with C > 1).
 */
object Accuracy {
    const val PERFECT_SNR_DB = 200.0

    /**
     * [pred] and [ref] are indexed [sample][output] -> flat float values of that sample's output.
     * [task] is the spec's reference.task or null; [firstOutputShape] the per-sample shape of output 0.
     */
    fun metrics(
        pred: List<List<FloatArray>>,
        ref: List<List<FloatArray>>,
        task: String?,
        firstOutputShape: List<Long>
    ): Map<String, Any?> {
        val p = flatten(pred)
        val r = flatten(ref)
        require(p.size == r.size) { "output sizes differ from the reference: ${p.size} vs ${r.size} values" }
        var dot = 0.0
        var pp = 0.0
        var rr = 0.0
        var noise = 0.0
        var maxAbs = 0.0
        var anyErr = false
        for (i in p.indices) {
            val e = p[i] - r[i]
            dot += p[i] * r[i]
            pp += p[i] * p[i]
            rr += r[i] * r[i]
            noise += e * e
            if (e != 0.0) anyErr = true
            if (abs(e) > maxAbs) maxAbs = abs(e)
        }
        val denom = sqrt(pp) * sqrt(rr)
        val cosine = if (denom > 0) dot / denom else (if (!anyErr) 1.0 else 0.0)
        val snr = if (noise == 0.0) PERFECT_SNR_DB else 10 * log10(maxOf(rr, 1e-30) / noise)
        val looksLikeLogits = firstOutputShape.size == 2 && firstOutputShape[0] == 1L && firstOutputShape[1] > 1
        var top1: Double? = null
        if (task == "classification" || (task == null && looksLikeLogits)) {
            var agree = 0
            for (s in ref.indices) if (argmax(pred[s][0]) == argmax(ref[s][0])) agree++
            top1 = agree.toDouble() / ref.size
        }
        return linkedMapOf(
            ResultKeys.Accuracy.SAMPLES to ref.size,
            ResultKeys.Accuracy.MAX_ABS_ERROR to maxAbs,
            ResultKeys.Accuracy.COSINE to min(1.0, cosine),
            ResultKeys.Accuracy.SNR_DB to min(snr, PERFECT_SNR_DB),
            ResultKeys.Accuracy.TOP1_AGREEMENT to top1
        )
    }

    private fun flatten(x: List<List<FloatArray>>): DoubleArray {
        var n = 0
        for (s in x) for (o in s) n += o.size
        val out = DoubleArray(n)
        var i = 0
        for (s in x) for (o in s) for (v in o) out[i++] = v.toDouble()
        return out
    }

    /** First index of the maximum, like numpy.argmax. */
    fun argmax(v: FloatArray): Int {
        var best = 0
        for (i in 1 until v.size) if (v[i] > v[best]) best = i
        return best
    }
}
