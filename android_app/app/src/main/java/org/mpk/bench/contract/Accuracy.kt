package org.mpk.bench.contract

import kotlin.math.abs
import kotlin.math.log10
import kotlin.math.min
import kotlin.math.sqrt

/**
 * On-device agreement with the fp32 reference: mpk's ONE definition of each number, ported from
 * packager/verify.py compute_metrics (the reference; mpk's CI compares this port with it number by number):
 *  - cosine = the MEAN over samples of each sample's cosine between artifact and fp32 outputs, all outputs of
 *    one sample concatenated and flattened (float64 accumulation). A sample whose two vectors are both all zero
 *    has cosine 1; one whose vectors are not both zero but have a zero norm has cosine 0.
 *    Example: samples ([1, 0] vs [1, 0]) and ([0, 1] vs [1, 0]) -> (1 + 0) / 2 = 0.5.
 *  - snr_db = 10 log10(sum ref^2 / sum (p - ref)^2) over all samples; an exact match is 200 dB (JSON has no
 *    infinity) and no value exceeds 200.
 *  - max_abs_error = the largest |p - ref| over all values.
 *  - top1_agreement = over the DECISIONS of the FIRST output on which the reference has a CLEAR top-1, the fraction
 *    whose argmax matches the reference's; null when no decision is clear, and for any task but classification
 *    (or, with no task given, a first output that looks like (1, C) logits with C > 1), "language-model" and
 *    "segmentation". A decision is a sample (classification: all its values), a position (language-model: rows
 *    of the last axis) or a pixel (segmentation: the class axis is the sample's axis 1).
 *    Clear: best - second best >= CLEAR_MARGIN (0.5) x the population standard deviation of the decision's scores,
 *    and > 0. Example: [2.0, 1.98, 0, 0] (std 0.99, margin 0.02) is not clear; [2.0, 1.5, 0, 0] is.
 *  - top1_counted = how many decisions were clear (the denominator of top1_agreement).
 */
object Accuracy {
    const val PERFECT_SNR_DB = 200.0
    const val CLEAR_MARGIN = 0.5

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
        require(pred.size == ref.size && ref.isNotEmpty()) {
            "expected ${ref.size} predicted samples, got ${pred.size}"
        }
        var cosineSum = 0.0
        var refEnergy = 0.0
        var noise = 0.0
        var maxAbs = 0.0
        for (s in ref.indices) {
            val p = pred[s]
            val r = ref[s]
            require(p.size == r.size) { "sample $s: ${p.size} outputs, the reference has ${r.size}" }
            var dot = 0.0
            var pp = 0.0
            var rr = 0.0
            var anyErr = false
            for (o in r.indices) {
                require(p[o].size == r[o].size) {
                    "sample $s output $o: ${p[o].size} values, the reference has ${r[o].size}"
                }
                for (i in r[o].indices) {
                    val pv = p[o][i].toDouble()
                    val rv = r[o][i].toDouble()
                    val e = pv - rv
                    dot += pv * rv
                    pp += pv * pv
                    rr += rv * rv
                    noise += e * e
                    if (e != 0.0) anyErr = true
                    if (abs(e) > maxAbs) maxAbs = abs(e)
                }
            }
            refEnergy += rr
            val denom = sqrt(rr) * sqrt(pp)
            cosineSum += if (denom > 0) dot / denom else (if (anyErr) 0.0 else 1.0)
        }
        // no floor under refEnergy: a tiny reference (1e-25 logits) answered with zeros is 0 dB, not 185 (mpk/metrics.py)
        val snr = when {
            noise == 0.0 -> PERFECT_SNR_DB
            refEnergy == 0.0 -> -PERFECT_SNR_DB
            else -> (10 * log10(refEnergy / noise)).coerceIn(-PERFECT_SNR_DB, PERFECT_SNR_DB)
        }
        val looksLikeLogits = firstOutputShape.size == 2 && firstOutputShape[0] == 1L && firstOutputShape[1] > 1
        val mode = when {
            task == "classification" || (task == null && looksLikeLogits) -> "classification"
            task == "language-model" || task == "segmentation" -> task
            else -> null
        }
        var top1: Double? = null
        var counted: Int? = null
        if (mode != null) {
            var agree = 0
            var clearRows = 0
            for (s in ref.indices) {
                val r = decisions(ref[s][0], mode, firstOutputShape)
                val p = decisions(pred[s][0], mode, firstOutputShape)
                for (d in r.indices) {
                    if (!isClear(r[d])) continue
                    clearRows++
                    if (argmax(p[d]) == argmax(r[d])) agree++
                }
            }
            counted = clearRows
            if (clearRows > 0) top1 = agree.toDouble() / clearRows
        }
        return linkedMapOf(
            ResultKeys.Accuracy.SAMPLES to ref.size,
            ResultKeys.Accuracy.MAX_ABS_ERROR to maxAbs,
            ResultKeys.Accuracy.COSINE to cosineSum / ref.size,
            ResultKeys.Accuracy.SNR_DB to snr,
            ResultKeys.Accuracy.TOP1_AGREEMENT to top1,
            ResultKeys.Accuracy.TOP1_COUNTED to counted
        )
    }

    /** One sample's first output as rows of scores, one per decision (see the class comment). */
    fun decisions(v: FloatArray, mode: String, shape: List<Long>): List<FloatArray> {
        if (mode == "language-model" && shape.isNotEmpty()) {
            val width = shape[shape.size - 1].toInt()
            return (0 until v.size / width).map { r -> FloatArray(width) { v[r * width + it] } }
        }
        if (mode == "segmentation" && shape.size >= 2) {
            val classes = shape[1].toInt()
            var spatial = 1
            for (i in 2 until shape.size) spatial *= shape[i].toInt()
            val rows = ArrayList<FloatArray>()
            for (b in 0 until shape[0].toInt()) {
                for (px in 0 until spatial) {
                    rows.add(FloatArray(classes) { c -> v[(b * classes + c) * spatial + px] })
                }
            }
            return rows
        }
        return listOf(v)
    }

    /** Best beats second best by more than 0 and by CLEAR_MARGIN population standard deviations. */
    fun isClear(v: FloatArray): Boolean {
        if (v.size < 2) return false
        var best = Double.NEGATIVE_INFINITY
        var second = Double.NEGATIVE_INFINITY
        var sum = 0.0
        for (x in v) {
            val d = x.toDouble()
            sum += d
            if (d > best) { second = best; best = d } else if (d > second) second = d
        }
        val mean = sum / v.size
        var sq = 0.0
        for (x in v) { val e = x.toDouble() - mean; sq += e * e }
        val margin = best - second
        return margin > 0 && margin >= CLEAR_MARGIN * sqrt(sq / v.size)
    }

    /** First index of the maximum, like numpy.argmax. */
    fun argmax(v: FloatArray): Int {
        var best = 0
        for (i in 1 until v.size) if (v[i] > v[best]) best = i
        return best
    }
}
