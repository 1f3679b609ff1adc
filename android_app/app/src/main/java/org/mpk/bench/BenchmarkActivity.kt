package org.mpk.bench

import android.app.Activity
import android.os.Bundle
import android.os.SystemClock
import android.util.Log
import android.view.WindowManager
import java.io.File
import java.security.MessageDigest
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import org.mpk.bench.contract.Accuracy
import org.mpk.bench.contract.ArtifactOutcome
import org.mpk.bench.contract.ArtifactSpec
import org.mpk.bench.contract.BenchmarkLoop
import org.mpk.bench.contract.ErrorKind
import org.mpk.bench.contract.Json
import org.mpk.bench.contract.MemoryReading
import org.mpk.bench.contract.ResultWriter
import org.mpk.bench.contract.Spec
import org.mpk.bench.contract.TensorIO
import org.mpk.bench.device.DeviceInfo
import org.mpk.bench.device.Memory
import org.mpk.bench.runtime.InputTensor
import org.mpk.bench.runtime.OrtRunner
import org.mpk.bench.runtime.Runtimes
import org.mpk.bench.runtime.UnsupportedBackend

/**
 * mpk's on-device runner. Started by mpk with
 *   am start -W -n org.mpk.bench/.BenchmarkActivity --es spec /data/local/tmp/mpk/<run_id>/spec.json
 * it measures every artifact in the spec, writes files/mpk/<run_id>/result.json, THEN files/mpk/<run_id>/DONE
 * ("ok" or "error: <message>"), logs "MPK_DONE run_id=<id> status=ok|error" under tag MpkBench, and finishes.
 * mpk polls DONE with `run-as org.mpk.bench cat ...`, so DONE must never appear before result.json is complete.
 *
 * CPU affinity: Android gives apps no public API to pin threads (sched_setaffinity needs JNI and the
 * runtimes' own thread pools would ignore it), so settings.cpu_affinity is recorded but not applied here.
 * Use the executor_runner driver with `taskset` for pinned runs.
 */
class BenchmarkActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // A dimmed screen lets the SoC drop into a lower power state mid-run; keep it on while measuring.
        window.addFlags(WindowManager.LayoutParams.FLAG_KEEP_SCREEN_ON)
        val specPath = intent.getStringExtra(EXTRA_SPEC)
        if (specPath == null) {
            Log.e(TAG, "missing --es $EXTRA_SPEC /data/local/tmp/mpk/<run_id>/spec.json")
            finish()
            return
        }
        // A background thread: the UI thread would be killed by the ANR watchdog on a slow model.
        Thread({ runAndReport(File(specPath)); runOnUiThread { finish() } }, "mpk-bench").start()
    }

    private fun runAndReport(specFile: File) {
        // Before the spec is parsed the run id is only known from the directory name mpk chose.
        var runId = specFile.parentFile?.name ?: "unknown"
        var outDir = File(filesDir, "mpk/$runId")
        try {
            val spec = Spec.parse(specFile.readText(), specFile.parentFile!!)
            runId = spec.runId
            outDir = File(filesDir, "mpk/$runId")
            outDir.mkdirs()
            File(outDir, DONE).delete()
            val result = measure(spec)
            writeAtomically(File(outDir, RESULT), Json.write(result))
            writeAtomically(File(outDir, DONE), "ok")
            Log.i(TAG, "MPK_DONE run_id=$runId status=ok")
        } catch (e: Throwable) {
            // Anything that escapes per-artifact handling (bad spec, disk full) still ends with a DONE marker,
            // so mpk reports the reason instead of waiting for its timeout.
            val msg = "${e.javaClass.simpleName}: ${e.message}".replace('\n', ' ')
            Log.e(TAG, "run $runId failed", e)
            try {
                outDir.mkdirs()
                writeAtomically(File(outDir, DONE), "error: $msg")
            } catch (ignored: Throwable) {
            }
            Log.i(TAG, "MPK_DONE run_id=$runId status=error")
        }
    }

    private fun measure(spec: Spec): Map<String, Any?> {
        val started = utcNow()
        val tempsBefore = DeviceInfo.temperatures()
        val outcomes = spec.artifacts.map { measureOne(spec, it) }
        val facts = DeviceInfo.facts(this, tempsBefore, DeviceInfo.temperatures())
        val runtimes = linkedMapOf("executorch-android" to BuildConfig.EXECUTORCH_VERSION)
        try {
            runtimes["onnxruntime-android"] = OrtRunner.version()
        } catch (e: Throwable) {
            runtimes["onnxruntime-android"] = BuildConfig.ONNXRUNTIME_VERSION
        }
        return ResultWriter.build(
            spec, "android_app", BuildConfig.VERSION_NAME, runtimes, DeviceInfo.isEmulator(), facts,
            started, utcNow(), outcomes
        )
    }

    private fun measureOne(spec: Spec, art: ArtifactSpec): ArtifactOutcome {
        val file = spec.resolve(art.path)
        if (!file.canRead()) return ArtifactOutcome(art, ErrorKind.LOAD, "cannot read ${file.path}")
        val digest = sha256(file)
        if (digest != art.sha256) {
            return ArtifactOutcome(art, ErrorKind.LOAD, "sha256 mismatch: spec ${art.sha256}, file $digest")
        }
        val (inputs, refOutputs) = try {
            referenceData(spec, art)
        } catch (e: Exception) {
            return ArtifactOutcome(art, ErrorKind.OTHER, "reference data: ${e.message}")
        }
        System.gc()
        val resetOk = Memory.resetPeak()
        val baseline = Memory.rssMb()
        var loadMs: Double? = null
        try {
            val t0 = SystemClock.elapsedRealtimeNanos()
            val runner = try {
                Runtimes.open(art, file, spec.settings.threads)
            } catch (e: UnsupportedBackend) {
                return ArtifactOutcome(art, ErrorKind.UNSUPPORTED, e.message)
            } catch (e: OutOfMemoryError) {
                return ArtifactOutcome(art, ErrorKind.OOM, "OutOfMemoryError while loading: ${e.message}")
            } catch (e: Throwable) {
                return ArtifactOutcome(art, ErrorKind.LOAD, "${e.javaClass.simpleName}: ${e.message}")
            }
            loadMs = (SystemClock.elapsedRealtimeNanos() - t0) / 1e6
            runner.use { r ->
                val timings = BenchmarkLoop.run(spec.settings) { r.run(inputs[0]) }
                // Accuracy after timing, so the comparison's allocations do not disturb the timed loop.
                val accuracy = refOutputs?.let { ref ->
                    val pred = inputs.map { r.run(it) }
                    val ro = spec.reference!!
                    Accuracy.metrics(pred, ref, ro.task, ro.outputs[0].shape)
                }
                val source = if (resetOk) Memory.SOURCE else "${Memory.SOURCE} (VmHWM not reset: may include earlier artifacts)"
                return ArtifactOutcome(
                    art, loadMs = loadMs, firstInferenceMs = timings.firstInferenceMs,
                    warmupIterations = timings.warmupIterations, samplesMs = timings.samplesMs,
                    memory = MemoryReading(baseline, Memory.hwmMb(), Memory.pssMb(), source),
                    accuracy = accuracy
                )
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
    private fun referenceData(spec: Spec, art: ArtifactSpec): Pair<List<List<InputTensor>>, List<List<FloatArray>>?> {
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

    private fun sha256(f: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        f.inputStream().use { s ->
            val buf = ByteArray(1 shl 20)
            while (true) {
                val n = s.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return md.digest().joinToString("") { "%02x".format(it) }
    }

    /** Write then rename, so a reader polling the file never sees half of it. */
    private fun writeAtomically(target: File, text: String) {
        val tmp = File(target.parentFile, target.name + ".tmp")
        tmp.writeText(text)
        if (!tmp.renameTo(target)) throw java.io.IOException("cannot rename $tmp to $target")
    }

    private fun utcNow(): String {
        val f = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.US)
        f.timeZone = TimeZone.getTimeZone("UTC")
        return f.format(Date())
    }

    companion object {
        const val TAG = "MpkBench"
        const val EXTRA_SPEC = "spec"
        const val RESULT = "result.json"
        const val DONE = "DONE"
    }
}
