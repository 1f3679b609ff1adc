package org.mpk.bench.contract

/**
 * The profiled pass's numbers, ported from mpk/profiling.py and mpk/contract/profile.py (mpk's CI checks them
 * number by number on a real ONNX Runtime profile, tests/integration/test_apps_kotlin_contract.py):
 *
 *  - an op row's total_ms sums its kernel times over every profiled run, mean_ms = total / calls,
 *    share = its total / every row's total; rows keep the runtime's execution order;
 *  - per_run_ms = every row's total / runs; vs_p50 = per_run_ms / unprofiled p50 - 1;
 *    overhead = a profiled run's wall time / unprofiled p50 - 1.
 *
 * The app does not map ops to PyTorch modules: mpk does that on the host with the package's op map, for a phone's
 * profile exactly as for the host runner's.
 */
data class OpEvent(val name: String, val opType: String, val provider: String?, val durUs: Double, val run: Int)

object Profiles {
    const val MEASURED = "measured"
    const val UNAVAILABLE = "unavailable"
    const val KERNEL_SUFFIX = "_kernel_time"

    /**
     * The per-node kernel executions of an ONNX Runtime profile (the JSON file `SessionOptions.enableProfiling`
     * makes): one `{"cat": "Node", "name": "<node>_kernel_time", "dur": us, "args": {"op_name", "provider"}}` per
     * node per run, inside the run's `{"cat": "Session", "name": "model_run"}`. Returns (events, runs seen).
     */
    fun ortEvents(text: String): Pair<List<OpEvent>, Int> {
        val trace = Json.parse(text) as? List<*> ?: throw IllegalArgumentException("an ORT profile is a JSON array")
        val runs = trace.mapNotNull { it as? Map<*, *> }
            .filter { it["cat"] == "Session" && it["name"] == "model_run" }
            .map { num(it["ts"]) to num(it["ts"]) + num(it["dur"]) }
            .sortedWith(compareBy({ it.first }, { it.second }))
        val out = ArrayList<OpEvent>()
        for (e in trace) {
            val m = e as? Map<*, *> ?: continue
            if (m["cat"] != "Node") continue
            val name = m["name"] as? String ?: continue
            if (!name.endsWith(KERNEL_SUFFIX)) continue
            val args = m["args"] as? Map<*, *> ?: emptyMap<String, Any?>()
            val ts = num(m["ts"])
            var run = runs.indexOfFirst { (a, b) -> ts >= a && ts <= b }
            if (run < 0) run = maxOf(runs.size - 1, 0)
            out.add(OpEvent(name.removeSuffix(KERNEL_SUFFIX), args["op_name"]?.toString() ?: "?",
                args["provider"] as? String, num(m["dur"]), run))
        }
        return Pair(out, runs.size)
    }

    /** One row per node in first-seen order: calls, total and mean ms, share of every row's total. */
    fun aggregate(events: List<OpEvent>, runs: Int): List<Map<String, Any?>> {
        val order = LinkedHashMap<String, MutableList<OpEvent>>()
        for (e in events) order.getOrPut(e.name) { ArrayList() }.add(e)
        val totals = order.mapValues { (_, es) -> es.fold(0.0) { acc, e -> acc + e.durUs } / 1000.0 }
        val grand = totals.values.sum()
        return order.map { (name, es) ->
            val total = totals.getValue(name)
            val provider = es[0].provider
            linkedMapOf(
                ResultKeys.ProfileOp.NAME to name,
                ResultKeys.ProfileOp.OP_TYPE to es[0].opType,
                ResultKeys.ProfileOp.PROVIDER to provider,
                ResultKeys.ProfileOp.DELEGATED to provider?.let { it != "CPUExecutionProvider" },
                ResultKeys.ProfileOp.CALLS to es.size,
                ResultKeys.ProfileOp.TOTAL_MS to total,
                ResultKeys.ProfileOp.MEAN_MS to total / es.size,
                ResultKeys.ProfileOp.SHARE to if (grand > 0) total / grand else 0.0,
                ResultKeys.ProfileOp.ESTIMATED to false
            )
        }
    }

    /** A profile the runtime measured op by op ([runs] profiled inferences; [profiledMs]: their mean wall time). */
    fun measured(method: String, runtime: String, runs: Int, ops: List<Map<String, Any?>>, profiledMs: Double,
                 notes: List<String> = emptyList()): MutableMap<String, Any?> = linkedMapOf(
        ResultKeys.Profile.STATUS to MEASURED,
        ResultKeys.Profile.METHOD to method,
        ResultKeys.Profile.GRANULARITY to "operator",
        ResultKeys.Profile.RUNTIME to runtime,
        ResultKeys.Profile.RUNS to runs,
        ResultKeys.Profile.OPS to ops,
        ResultKeys.Profile.PROFILED_MS to profiledMs,
        ResultKeys.Profile.NOTES to notes
    )

    /** What could not be measured, and why: never an empty table posing as a result. */
    fun unavailable(method: String, limits: List<String>, runtime: String? = null): MutableMap<String, Any?> =
        linkedMapOf(
            ResultKeys.Profile.STATUS to UNAVAILABLE,
            ResultKeys.Profile.METHOD to method,
            ResultKeys.Profile.RUNTIME to runtime,
            ResultKeys.Profile.RUNS to 0,
            ResultKeys.Profile.OPS to emptyList<Any?>(),
            ResultKeys.Profile.LIMITS to limits
        )

    /** The comparison with the unprofiled timed loop (its stats' p50 and mean), which is only read, never changed. */
    fun finish(profile: MutableMap<String, Any?>, p50Ms: Double?, meanMs: Double?): Map<String, Any?> {
        val ops = profile[ResultKeys.Profile.OPS] as? List<*> ?: emptyList<Any?>()
        val runs = maxOf((profile[ResultKeys.Profile.RUNS] as? Number)?.toInt() ?: 1, 1)
        val perRun: Double? = if (ops.isEmpty()) null
            else ops.fold(0.0) { acc, o -> acc + ((o as Map<*, *>)[ResultKeys.ProfileOp.TOTAL_MS] as Number).toDouble() } / runs
        profile[ResultKeys.Profile.PER_RUN_MS] = perRun
        profile[ResultKeys.Profile.UNPROFILED_P50_MS] = p50Ms
        profile[ResultKeys.Profile.UNPROFILED_MEAN_MS] = meanMs
        if (p50Ms != null && p50Ms > 0) {
            if (perRun != null) profile[ResultKeys.Profile.VS_P50] = perRun / p50Ms - 1
            val wall = profile[ResultKeys.Profile.PROFILED_MS] as? Number
            if (wall != null) profile[ResultKeys.Profile.OVERHEAD] = wall.toDouble() / p50Ms - 1
        }
        return profile
    }

    /**
     * ONNX Runtime's profiled pass on a session made with profiling on: [warmup] untimed runs, [runs] timed ones
     * (wall time each, for overhead), then [endProfiling] (the path ORT wrote its JSON to) read and aggregated;
     * the warm-up runs' events are left out.
     */
    fun ortProfile(
        run: () -> Unit, endProfiling: () -> String, runtime: String, runs: Int, warmup: Int,
        clockNs: () -> Long = { System.nanoTime() }
    ): MutableMap<String, Any?> {
        repeat(warmup) { run() }
        var wall = 0.0
        repeat(runs) {
            val t0 = clockNs()
            run()
            wall += (clockNs() - t0) / 1e6
        }
        val (events, seen) = ortEvents(java.io.File(endProfiling()).readText())
        val notes = if (seen != runs + warmup) listOf("ORT's profile holds $seen runs, ${runs + warmup} were made")
            else emptyList()
        return measured(ORT_METHOD, runtime, runs, aggregate(events.filter { it.run >= warmup }, runs),
            if (runs > 0) wall / runs else 0.0, notes)
    }

    const val ORT_METHOD = "onnxruntime SessionOptions.enableProfiling: per-node _kernel_time events (op_name, provider)"

    /** ExecuTorch on Android: what Module.etdump(path) gave ([written]), said as what it is. */
    fun executorchEtdump(written: Boolean, path: String, version: String): MutableMap<String, Any?> =
        unavailable(
            "ExecuTorch Module.etdump(outputPath) after the profiled runs",
            if (written) listOf("ETDump written to $path: the app does not read ETDumps; pull it and read it with " +
                "ExecuTorch's Inspector and the package's ETRecord (artifacts[].profiling.etrecord)")
            else listOf("the executorch-android AAR $version is built without EXECUTORCH_ANDROID_PROFILING (its " +
                "release build's default): Module.etdump() wrote nothing, so this runtime times no op on its own; " +
                "mpk's per-unit estimate needs the host's lowering and runs on the host runner and the virtual " +
                "device only"),
            "executorch $version"
        )

    private fun num(v: Any?): Double = (v as? Number)?.toDouble() ?: 0.0
}
