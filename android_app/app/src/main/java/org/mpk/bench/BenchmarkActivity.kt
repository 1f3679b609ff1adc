package org.mpk.bench

import android.app.Activity
import android.os.Bundle
import android.util.Log
import android.view.WindowManager
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone
import org.mpk.bench.contract.Json
import org.mpk.bench.contract.Measurement
import org.mpk.bench.contract.ResultWriter
import org.mpk.bench.contract.Spec
import org.mpk.bench.device.DeviceInfo
import org.mpk.bench.device.Memory
import org.mpk.bench.runtime.AndroidRuntimes

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
            val result = measure(spec, outDir)
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

    private fun measure(spec: Spec, outDir: File): Map<String, Any?> {
        val started = utcNow()
        val tempsBefore = DeviceInfo.temperatures()
        // contract/Measure.kt holds the measuring order (runtime loaded before the baseline, peak read before the
        // accuracy pass) and the sha256 and runtime-version checks, as plain JVM code mpk's CI runs.
        // settings.profile: a profiled pass per artifact after its timed loop; ORT's profile files go to outDir
        val outcomes = spec.artifacts.map { Measurement.measureOne(spec, it, AndroidRuntimes, Memory, workDir = outDir) }
        val facts = DeviceInfo.facts(this, tempsBefore, DeviceInfo.temperatures())
        return ResultWriter.build(
            spec, "android_app", BuildConfig.VERSION_NAME, AndroidRuntimes.versions, DeviceInfo.isEmulator(), facts,
            started, utcNow(), outcomes
        )
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
