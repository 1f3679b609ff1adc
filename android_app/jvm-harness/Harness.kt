// JVM-only harness: lets mpk's CI run the app's platform-independent contract code (org.mpk.bench.contract)
// on this host with kotlinc, and compare it with runners/stats.py and the JSON Schemas.
// Not part of the APK. Protocol: one JSON object on stdin {"requests": [...]}, one JSON list on stdout.
package org.mpk.bench.harness

import java.io.File
import org.mpk.bench.contract.Accuracy
import org.mpk.bench.contract.ArtifactOutcome
import org.mpk.bench.contract.ArtifactSpec
import org.mpk.bench.contract.BenchmarkLoop
import org.mpk.bench.contract.Compat
import org.mpk.bench.contract.CpuInt8
import org.mpk.bench.contract.DeviceFacts
import org.mpk.bench.contract.ErrorKind
import org.mpk.bench.contract.InputTensor
import org.mpk.bench.contract.Json
import org.mpk.bench.contract.LatencyStats
import org.mpk.bench.contract.Measurement
import org.mpk.bench.contract.MemoryProbe
import org.mpk.bench.contract.MemoryReading
import org.mpk.bench.contract.ModelRunner
import org.mpk.bench.contract.Profiles
import org.mpk.bench.contract.RuntimeHost
import org.mpk.bench.contract.RuntimeRequirement
import org.mpk.bench.contract.Spec
import org.mpk.bench.contract.SpecException
import org.mpk.bench.contract.TensorIO
import org.mpk.bench.contract.UnsupportedBackend

/**
 * A runtime that records what the measuring sequence asks of it, in order, and answers every inference with
 * [outputs] (one FloatArray per model output). Stands in for ExecuTorch / ONNX Runtime, which need a phone.
 */
class RecordingHost(
    override val versions: Map<String, String>,
    private val outputs: List<FloatArray>,
    private val events: MutableList<String>,
    private val preloadError: String?
) : RuntimeHost {
    override fun preload(backend: String) {
        events.add("preload:$backend")
        if (preloadError != null) throw UnsatisfiedLinkError(preloadError)
    }

    /** The profiled pass: recorded, and answered with an ORT profile given by the test (a real one) if any. */
    var ortProfile: String? = null

    override fun profile(
        artifact: ArtifactSpec, file: File, threads: Int, inputs: List<InputTensor>, runs: Int, warmup: Int,
        workDir: File
    ): MutableMap<String, Any?> {
        events.add("profile:$runs:$warmup")
        val path = ortProfile ?: return Profiles.unavailable("harness", listOf("no profile given"))
        return Profiles.ortProfile({ events.add("profiled-run") }, { path }, "onnxruntime harness", runs, warmup)
    }

    override fun open(artifact: ArtifactSpec, file: File, threads: Int): ModelRunner {
        if (artifact.backend == "coreml") throw UnsupportedBackend("coreml does not run here")
        events.add("open")
        return object : ModelRunner {
            override fun run(inputs: List<InputTensor>): List<FloatArray> {
                events.add("run")
                return outputs
            }

            override fun close() {
                events.add("close")
            }
        }
    }
}

class RecordingMemory(private val events: MutableList<String>) : MemoryProbe {
    override val source = "harness"

    override fun resetPeak(): Boolean {
        events.add("reset")
        return true
    }

    override fun residentMb(): Double {
        events.add("baseline")
        return 100.0
    }

    override fun peakMb(): Double {
        events.add("peak")
        return 150.0
    }

    override fun pssMb(): Double? {
        events.add("pss")
        return 120.0
    }
}

fun strMap(v: Any?): Map<String, String> = (v as Map<*, *>).entries.associate { (k, x) -> k.toString() to x.toString() }

fun nums(v: Any?): DoubleArray = (v as List<*>).map { (it as Number).toDouble() }.toDoubleArray()

fun floats3(v: Any?): List<List<FloatArray>> =
    (v as List<*>).map { s -> (s as List<*>).map { o -> nums(o).map { it.toFloat() }.toFloatArray() } }

fun handle(req: Map<*, *>): Any? = when (req["op"]) {
    "stats" -> LatencyStats.fromSamples(nums(req["samples"])).toMap()
    "accuracy" -> Accuracy.metrics(
        floats3(req["pred"]), floats3(req["ref"]), req["task"] as String?,
        (req["shape"] as List<*>).map { (it as Number).toLong() }
    )
    "loop" -> {
        // A fake clock that advances a fixed step per reading makes the stopping rule deterministic.
        var t = 0L
        val step = (req["step_ns"] as Number).toLong()
        val spec = Spec.parse(File(req["spec"] as String).readText(), File(req["spec"] as String).parentFile)
        var calls = 0
        val r = BenchmarkLoop.run(spec.settings, { t += step; t }) { calls++ }
        linkedMapOf("calls" to calls, "iterations" to r.samplesMs.size, "warmup" to r.warmupIterations)
    }
    "spec" -> try {
        val f = File(req["spec"] as String)
        val spec = Spec.parse(f.readText(), f.parentFile)
        linkedMapOf("run_id" to spec.runId, "artifacts" to spec.artifacts.map { it.id }, "problems" to emptyList<String>())
    } catch (e: SpecException) {
        linkedMapOf("problems" to e.problems)
    }
    "result" -> {
        val f = File(req["spec"] as String)
        val spec = Spec.parse(f.readText(), f.parentFile)
        val ref = spec.reference!!
        val refOut = ref.outputs.map { TensorIO.readSamples(spec.resolve(it.path), it, ref.samples) }
        val perSample = List(ref.samples) { s -> refOut.map { it[s] } }
        val acc = Accuracy.metrics(perSample, perSample, ref.task, ref.outputs[0].shape)
        val facts = DeviceFacts(
            "harness", "jvm", null, "x86_64", "android", "15", 8, "schedutil", listOf(1800000),
            null, mapOf("cpu0" to 35.5), mapOf("cpu0" to 36.0), null,
            listOf("avx2", "fma", "sse4_1"), "avx2" to true
        )
        val outcomes = spec.artifacts.mapIndexed { i, a ->
            if (i == 0) {
                ArtifactOutcome(
                    a, loadMs = 12.5, firstInferenceMs = 3.25, warmupIterations = spec.settings.warmupIterations,
                    samplesMs = nums(req["samples"]), memory = MemoryReading(100.0, 140.5, 120.25, "/proc/self/status"),
                    accuracy = acc
                )
            } else {
                ArtifactOutcome(a, errorKind = ErrorKind.OOM, errorMessage = "OutOfMemoryError: harness")
            }
        }
        org.mpk.bench.contract.ResultWriter.build(
            spec, "android_app", "harness", mapOf("executorch" to "1.4.1", "onnxruntime" to "1.24.3"), false, facts,
            "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", outcomes
        )
    }
    "measure" -> {
        val f = File(req["spec"] as String)
        val spec = Spec.parse(f.readText(), f.parentFile)
        val events = ArrayList<String>()
        val outputs = (req["outputs"] as List<*>).map { nums(it).map { x -> x.toFloat() }.toFloatArray() }
        val host = RecordingHost(strMap(req["linked"]), outputs, events, req["preload_error"] as String?)
        host.ortProfile = req["ort_profile"] as String?
        var t = 0L
        val outcome = Measurement.measureOne(spec, spec.artifacts[0], host, RecordingMemory(events),
            gc = { events.add("gc") }, clockNs = { t += 1000000L; t })
        linkedMapOf("events" to events, "outcome" to outcome.toMap())
    }
    "compat" -> (req["cases"] as List<*>).map { c ->
        val m = c as Map<*, *>
        val r = m["req"] as Map<*, *>
        val need = RuntimeRequirement(r["runtime"] as String, r["min_version"] as String?, r["file_identifier"] as String?)
        Compat.refusal(need, strMap(m["linked"]))
    }
    "sha256" -> Measurement.sha256(File(req["path"] as String))
    "cpu_int8" -> {
        val features = CpuInt8.features(req["cpuinfo"] as String)
        val (name, saturates) = CpuInt8.kernel(req["abi"] as String, features)
        linkedMapOf("features" to features, "name" to name, "saturates" to saturates)
    }
    "ortProfile" -> {
        // a fake clock advancing step_ns per reading: each profiled run's wall time is exactly step_ns
        var t = 0L
        val step = (req["step_ns"] as Number).toLong()
        val p = Profiles.ortProfile({}, { req["path"] as String }, "onnxruntime harness",
            (req["runs"] as Number).toInt(), (req["warmup"] as Number).toInt(), { t += step; t })
        Profiles.finish(p, (req["p50"] as Number).toDouble(), (req["mean"] as Number).toDouble())
    }
    else -> throw IllegalArgumentException("unknown op ${req["op"]}")
}

fun main(args: Array<String>) {
    val input = generateSequence(::readLine).joinToString("\n")
    val reqs = (Json.parse(input) as Map<*, *>)["requests"] as List<*>
    val out = reqs.map { r ->
        try {
            handle(r as Map<*, *>)
        } catch (e: Exception) {
            mapOf("exception" to "${e.javaClass.simpleName}: ${e.message}")
        }
    }
    println(Json.write(out))
}
