package org.mpk.bench.contract

/** Timings of one warm-up + timed loop. */
class LoopTimings(val firstInferenceMs: Double, val warmupIterations: Int, val samplesMs: DoubleArray)

/**
 * The measuring loop, with the same stopping rule as runners/host_runner.py so a phone and the host
 * answer the same question: one first inference (reported apart: it pays for lazy init), then
 * warmup_iterations untimed runs, then timed runs until BOTH min_iterations and min_seconds are met.
 * max_seconds cuts a model too slow for min_iterations (after at least one sample); the result then
 * says how many ran.
 *
 * [clockNs] is injectable so the stopping rule can be tested on the JVM with a fake clock.
 */
object BenchmarkLoop {
    fun run(settings: Settings, clockNs: () -> Long = { System.nanoTime() }, infer: () -> Unit): LoopTimings {
        val t0 = clockNs()
        infer()
        val first = (clockNs() - t0) / 1e6
        for (i in 0 until settings.warmupIterations) infer()
        val samples = ArrayList<Double>()
        val minNs = settings.minSeconds * 1e9
        val maxNs = settings.maxSeconds?.let { it * 1e9 }
        val start = clockNs()
        while (true) {
            val elapsed = clockNs() - start
            if (samples.size >= settings.minIterations && elapsed >= minNs) break
            if (maxNs != null && samples.isNotEmpty() && elapsed >= maxNs) break
            val a = clockNs()
            infer()
            samples.add((clockNs() - a) / 1e6)
        }
        return LoopTimings(first, settings.warmupIterations, samples.toDoubleArray())
    }
}
