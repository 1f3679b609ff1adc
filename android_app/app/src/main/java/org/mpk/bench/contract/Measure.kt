package org.mpk.bench.contract

import java.io.File
import java.security.MessageDigest

/**
 * Measuring one artifact, in the order that gives memory its ONE definition (runner_result.schema.json, and the
 * host runner's order):
 *  1. the file is checked (readable, sha256 as in the spec) and the runtime requirement is checked against what
 *     this app links ([Compat]); reference tensors are read;
 *  2. the runtime's native libraries are loaded ([RuntimeHost.preload]) BEFORE the baseline, so that
 *     baseline_rss_mb already includes them and rise_mb is the model's own cost;
 *  3. the peak counter is reset and the baseline read; the model is loaded (load_ms);
 *  4. first inference, warm-up and the timed loop ([BenchmarkLoop]);
 *  5. the peak (and PSS) is read right after the timed loop, BEFORE the accuracy pass, so the comparison's
 *     allocations never count as the model's;
 *  6. the accuracy pass over the reference samples;
 *  7. only when the spec asks (settings.profile), after the model is closed: a separate profiled pass on a
 *     session of its own ([RuntimeHost.profile]); it never touches the timed samples, it is compared with them.
 * Everything here is plain JVM code: mpk's CI runs it with a fake runtime and checks this order.
 */
object Measurement {
    /** profiled inferences after [PROFILE_WARMUP] untimed ones (the host runner's packager/profiling.py numbers) */
    const val PROFILE_RUNS = 20
    const val PROFILE_WARMUP = 3

    fun measureOne(
        spec: Spec,
        art: ArtifactSpec,
        host: RuntimeHost,
        memory: MemoryProbe,
        gc: () -> Unit = { System.gc() },
        clockNs: () -> Long = { System.nanoTime() },
        workDir: File? = null
    ): ArtifactOutcome {
        val outcome = measureTimed(spec, art, host, memory, gc, clockNs)
        if (!spec.settings.profile || !outcome.ok) return outcome
        val stats = LatencyStats.fromSamples(outcome.samplesMs)
        val inputs = referenceData(spec, art).first[0]
        val profile = try {
            host.profile(art, spec.resolve(art.path), spec.settings.threads, inputs, PROFILE_RUNS, PROFILE_WARMUP,
                workDir ?: spec.dir)
        } catch (e: Throwable) {  // the measurement stands; the profile says why it is missing
            Profiles.unavailable("the profiled pass failed", listOf("${e.javaClass.simpleName}: ${e.message}"))
        }
        return outcome.withProfile(Profiles.finish(profile, stats.p50Ms, stats.meanMs))
    }

    private fun measureTimed(
        spec: Spec,
        art: ArtifactSpec,
        host: RuntimeHost,
        memory: MemoryProbe,
        gc: () -> Unit,
        clockNs: () -> Long
    ): ArtifactOutcome {
        val file = spec.resolve(art.path)
        if (!file.canRead()) return ArtifactOutcome(art, ErrorKind.LOAD, "cannot read ${file.path}")
        val digest = sha256(file)
        if (digest != art.sha256) {
            return ArtifactOutcome(art, ErrorKind.LOAD, "sha256 mismatch: spec ${art.sha256}, file $digest")
        }
        val refusal = Compat.refusal(art.runtime, host.versions)
        if (refusal != null) return ArtifactOutcome(art, ErrorKind.UNSUPPORTED, refusal)
        val (inputs, refOutputs) = try {
            referenceData(spec, art)
        } catch (e: Exception) {
            return ArtifactOutcome(art, ErrorKind.OTHER, "reference data: ${e.message}")
        }
        try {
            host.preload(art.backend)
        } catch (e: UnsupportedBackend) {
            return ArtifactOutcome(art, ErrorKind.UNSUPPORTED, e.message)
        } catch (e: Throwable) {
            return ArtifactOutcome(art, ErrorKind.LOAD, "runtime libraries: ${e.javaClass.simpleName}: ${e.message}")
        }
        gc()
        val resetOk = memory.resetPeak()
        val baseline = memory.residentMb()
        var loadMs: Double? = null
        try {
            val t0 = clockNs()
            val runner = try {
                host.open(art, file, spec.settings.threads)
            } catch (e: UnsupportedBackend) {
                return ArtifactOutcome(art, ErrorKind.UNSUPPORTED, e.message)
            } catch (e: OutOfMemoryError) {
                return ArtifactOutcome(art, ErrorKind.OOM, "OutOfMemoryError while loading: ${e.message}")
            } catch (e: Throwable) {
                return ArtifactOutcome(art, ErrorKind.LOAD, "${e.javaClass.simpleName}: ${e.message}")
            }
            loadMs = (clockNs() - t0) / 1e6
            // try/finally rather than use {}: AutoCloseable.use is not in the Kotlin stdlib CI compiles with
            try {
                val timings = BenchmarkLoop.run(spec.settings, clockNs) { runner.run(inputs[0]) }
                val peak = memory.peakMb()
                val pss = memory.pssMb()
                val accuracy = refOutputs?.let { ref ->
                    val pred = inputs.map { runner.run(it) }
                    val ro = spec.reference!!
                    Accuracy.metrics(pred, ref, ro.task, ro.outputs[0].shape)
                }
                val source = if (resetOk) memory.source else "${memory.source} (peak not reset: may include earlier artifacts)"
                return ArtifactOutcome(
                    art, loadMs = loadMs, firstInferenceMs = timings.firstInferenceMs,
                    warmupIterations = timings.warmupIterations, samplesMs = timings.samplesMs,
                    memory = MemoryReading(baseline, peak, pss, source), accuracy = accuracy
                )
            } finally {
                runner.close()
            }
        } catch (e: OutOfMemoryError) {
            return ArtifactOutcome(art, ErrorKind.OOM, "OutOfMemoryError during inference: ${e.message}", loadMs)
        } catch (e: Throwable) {
            return ArtifactOutcome(art, ErrorKind.INFERENCE, "${e.javaClass.simpleName}: ${e.message}", loadMs)
        }
    }

    /**
     * Per-sample inputs and reference outputs from the spec's .bin files. Without a reference the model runs on
     * zeros shaped by the artifact's input specs (dynamic dims -> 1) and no accuracy is reported.
     */
    fun referenceData(spec: Spec, art: ArtifactSpec): Pair<List<List<InputTensor>>, List<List<FloatArray>>?> {
        val ref = spec.reference
        if (ref == null) {
            val one = art.inputs.map { t ->
                val shape = t.shape.map { (it as? Number)?.toLong() ?: 1L }.toLongArray()
                val n = shape.fold(1L) { a, b -> a * b }.toInt()
                if (t.dtype == "int64") InputTensor(shape, null, LongArray(n)) else InputTensor(shape, FloatArray(n))
            }
            require(one.isNotEmpty()) { "the spec has neither reference tensors nor input specs" }
            return Pair(listOf(one), null)
        }
        val ins = ref.inputs.map { t ->
            val f = spec.resolve(t.path)
            if (t.dtype == "int64") {
                TensorIO.readLongSamples(f, t, ref.samples).map { InputTensor(t.shape.toLongArray(), null, it) }
            } else {
                TensorIO.readSamples(f, t, ref.samples).map { InputTensor(t.shape.toLongArray(), it) }
            }
        }
        val outs = ref.outputs.map { TensorIO.readSamples(spec.resolve(it.path), it, ref.samples) }
        return Pair(List(ref.samples) { s -> ins.map { it[s] } }, List(ref.samples) { s -> outs.map { it[s] } })
    }

    /** Lower-case hex SHA-256 of a file, streamed (artifacts can be hundreds of MB). */
    fun sha256(f: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        f.inputStream().use { s ->
            val buf = ByteArray(1 shl 20)
            while (true) {
                val n = s.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return md.digest().joinToString("") { String.format("%02x", it) }
    }
}
