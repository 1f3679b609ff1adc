package org.mpk.bench.contract

import kotlin.math.exp
import kotlin.math.floor
import kotlin.math.ln
import kotlin.math.sqrt

/**
 * Latency summary, computed exactly as runners/stats.py LatencyStats.from_samples does, so a p90 from a phone
 * means the same thing as a p90 from the host runner:
 *  - percentiles use LINEAR interpolation between order statistics (numpy's default `method="linear"`):
 *    h = (n-1)q, value = a[floor(h)] + (h-floor(h)) * (a[floor(h)+1] - a[floor(h)]);
 *  - std is the sample std (ddof=1); cv = std/mean;
 *  - trimmed mean drops floor(0.1 n) samples from each end;
 *  - p50/p90 confidence intervals are distribution-free binomial order statistics.
 * mpk's CI compiles this file with kotlinc and compares every field with runners/stats.py on fixed samples.
 */
class LatencyStats private constructor(
    val n: Int,
    val meanMs: Double,
    val trimmedMeanMs: Double,
    val stdMs: Double,
    val cv: Double,
    val minMs: Double,
    val p50Ms: Double,
    val p90Ms: Double,
    val p99Ms: Double,
    val maxMs: Double,
    val p50CiMs: DoubleArray,
    val p90CiMs: DoubleArray,
    val confidence: Double
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        ResultKeys.Stats.N to n,
        ResultKeys.Stats.MEAN_MS to meanMs,
        ResultKeys.Stats.TRIMMED_MEAN_MS to trimmedMeanMs,
        ResultKeys.Stats.STD_MS to stdMs,
        ResultKeys.Stats.CV to cv,
        ResultKeys.Stats.MIN_MS to minMs,
        ResultKeys.Stats.P50_MS to p50Ms,
        ResultKeys.Stats.P90_MS to p90Ms,
        ResultKeys.Stats.P99_MS to p99Ms,
        ResultKeys.Stats.MAX_MS to maxMs,
        ResultKeys.Stats.P50_CI_MS to p50CiMs.toList(),
        ResultKeys.Stats.P90_CI_MS to p90CiMs.toList(),
        ResultKeys.Stats.CONFIDENCE to confidence
    )

    companion object {
        /** Fraction trimmed from each end for the trimmed mean (0.1 keeps the middle 80%). */
        const val TRIM = 0.1
        const val CONFIDENCE = 0.95

        fun fromSamples(samplesMs: DoubleArray, confidence: Double = CONFIDENCE): LatencyStats {
            require(samplesMs.isNotEmpty()) { "no latency samples" }
            val a = samplesMs.copyOf()
            a.sort()
            require(a.all { !it.isNaN() && !it.isInfinite() } && a[0] >= 0) {
                "latency samples must be finite and non-negative"
            }
            val n = a.size
            val k = (n * TRIM).toInt()
            val trimmed = if (n - 2 * k > 0) a.copyOfRange(k, n - k) else a
            val mean = a.sum() / n
            var ss = 0.0
            for (x in a) ss += (x - mean) * (x - mean)
            val std = if (n > 1) sqrt(ss / (n - 1)) else 0.0
            return LatencyStats(
                n = n,
                meanMs = mean,
                trimmedMeanMs = trimmed.sum() / trimmed.size,
                stdMs = std,
                cv = if (mean > 0) std / mean else 0.0,
                minMs = a[0],
                p50Ms = quantile(a, 0.50),
                p90Ms = quantile(a, 0.90),
                p99Ms = quantile(a, 0.99),
                maxMs = a[n - 1],
                p50CiMs = quantileCi(a, 0.50, confidence),
                p90CiMs = quantileCi(a, 0.90, confidence),
                confidence = confidence
            )
        }

        /** numpy.quantile(a, q, method="linear") of SORTED [a]. */
        fun quantile(a: DoubleArray, q: Double): Double {
            // numpy's virtual index for alpha=beta=1, written the same way so rounding matches bit for bit
            val h = a.size * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0
            val lo = floor(h).toInt()
            if (lo >= a.size - 1) return a[a.size - 1]
            val g = h - lo
            // numpy's _lerp: a + (b-a)*g, with the mirrored form for g >= 0.5 to stay exact at the ends.
            val x = a[lo]
            val y = a[lo + 1]
            val d = y - x
            return if (g >= 0.5) y - d * (1 - g) else x + d * g
        }

        /**
         * Distribution-free CI of the q-quantile from SORTED [a]: the pair of order statistics whose ranks come
         * from Binomial(n, q). Same rule as runners/stats.py quantile_ci (too few samples -> min/max, honestly wide).
         */
        fun quantileCi(a: DoubleArray, q: Double, confidence: Double): DoubleArray {
            val n = a.size
            if (n == 1) return doubleArrayOf(a[0], a[0])
            val alpha = 1.0 - confidence
            val cdf = binomCdf(n, q)
            var loIdx = 0 // searchsorted(cdf, alpha/2, side="right"): how many cdf values are <= alpha/2
            while (loIdx < cdf.size && cdf[loIdx] <= alpha / 2) loIdx++
            var left = 0 // searchsorted(cdf, 1-alpha/2, side="left"): how many cdf values are < 1-alpha/2
            while (left < cdf.size && cdf[left] < 1 - alpha / 2) left++
            val loRank = maxOf(1, loIdx)
            val hiRank = minOf(n, left + 1)
            return doubleArrayOf(a[loRank - 1], a[hiRank - 1])
        }

        /** CDF of Binomial(n, q) at 0..n in log space; log C(n,k) built incrementally (no lgamma on the JVM). */
        fun binomCdf(n: Int, q: Double): DoubleArray {
            val cdf = DoubleArray(n + 1)
            if (q <= 0.0 || q >= 1.0) {
                val from = if (q <= 0.0) 0 else n
                for (k in 0..n) cdf[k] = if (k >= from) 1.0 else 0.0
                return cdf
            }
            val logp = DoubleArray(n + 1)
            var logc = 0.0
            val lq = ln(q)
            val l1q = ln(1 - q)
            for (k in 0..n) {
                if (k > 0) logc += ln((n - k + 1).toDouble()) - ln(k.toDouble())
                logp[k] = logc + k * lq + (n - k) * l1q
            }
            val mx = logp.max() ?: 0.0
            var sum = 0.0
            for (k in 0..n) { logp[k] = exp(logp[k] - mx); sum += logp[k] }
            var acc = 0.0
            for (k in 0..n) { acc += logp[k] / sum; cdf[k] = acc }
            return cdf
        }
    }
}
