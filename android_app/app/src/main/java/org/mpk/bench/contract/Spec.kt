package org.mpk.bench.contract

import java.io.File

/** The run settings mpk resolved from devices.yaml (runner_spec.schema.json: settings). */
data class Settings(
    val threads: Int,
    val cpuAffinity: List<Int>?,
    val warmupIterations: Int,
    val minIterations: Int,
    val minSeconds: Double,
    val maxSeconds: Double?,
    /** a separate profiled pass per artifact after its timed loop (mpk bench --profile) */
    val profile: Boolean = false
)

/** One reference tensor file: N samples of [shape] stacked along a new leading axis, raw little-endian. */
data class TensorFile(val name: String, val path: String, val shape: List<Long>, val dtype: String) {
    /** Elements in one sample (the product of [shape]). */
    val sampleElements: Int get() = shape.fold(1L) { a, b -> a * b }.toInt()
}

data class Reference(val samples: Int, val task: String, val inputs: List<TensorFile>, val outputs: List<TensorFile>)

data class TensorSpec(val name: String, val shape: List<Any?>, val dtype: String)

/** What the artifact needs at run time (the manifest's artifacts[].runtime; see [Compat]). */
data class RuntimeRequirement(val runtime: String, val minVersion: String?, val fileIdentifier: String?)

data class ArtifactSpec(
    val id: String,
    val backend: String,
    val scheme: String,
    val path: String,
    val sha256: String,
    val extraFiles: List<String>,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val runtime: RuntimeRequirement? = null
)

/**
 * A parsed runner spec. Paths inside it are relative to [dir], the directory holding spec.json,
 * exactly as the schema says; [resolve] turns them into files.
 */
data class Spec(
    val runId: String,
    val deviceId: String,
    val settings: Settings,
    val reference: Reference?,
    val artifacts: List<ArtifactSpec>,
    val dir: File
) {
    fun resolve(relative: String): File = File(dir, relative)

    companion object {
        /**
         * Parse [text]. Every problem found is collected, each with its JSON path, and thrown together as one
         * [SpecException]: a phone is slow to iterate on, so the user should see all mistakes at once.
         */
        fun parse(text: String, dir: File): Spec {
            val root = Json.parse(text) as? Map<*, *> ?: throw SpecException(listOf("<root>: expected an object"))
            val p = ArrayList<String>()
            val version = root[SpecKeys.Top.SCHEMA_VERSION]
            if (version != SpecKeys.SCHEMA_VERSION_VALUE) {
                p.add("schema_version: expected '${SpecKeys.SCHEMA_VERSION_VALUE}', got '$version'")
            }
            val runId = str(root, SpecKeys.Top.RUN_ID, "", p)
            val deviceId = str(root, SpecKeys.Top.DEVICE_ID, "", p)
            val s = root[SpecKeys.Top.SETTINGS] as? Map<*, *>
            if (s == null) p.add("settings: expected an object")
            val settings = Settings(
                threads = int(s, SpecKeys.Settings.THREADS, "settings", p) ?: 1,
                cpuAffinity = (s?.get(SpecKeys.Settings.CPU_AFFINITY) as? List<*>)?.map { (it as Number).toInt() },
                warmupIterations = int(s, SpecKeys.Settings.WARMUP_ITERATIONS, "settings", p) ?: 0,
                minIterations = int(s, SpecKeys.Settings.MIN_ITERATIONS, "settings", p) ?: 1,
                minSeconds = (s?.get(SpecKeys.Settings.MIN_SECONDS) as? Number)?.toDouble()
                    ?: 0.0.also { p.add("settings.min_seconds: expected a number") },
                maxSeconds = (s?.get(SpecKeys.Settings.MAX_SECONDS) as? Number)?.toDouble(),
                profile = s?.get(SpecKeys.Settings.PROFILE) == true
            )
            val ref = (root[SpecKeys.Top.REFERENCE] as? Map<*, *>)?.let { r ->
                Reference(
                    samples = int(r, SpecKeys.Reference.SAMPLES, "reference", p) ?: 0,
                    task = (r[SpecKeys.Reference.TASK] as? String) ?: "other",
                    inputs = tensorFiles(r[SpecKeys.Reference.INPUTS], "reference.inputs", p),
                    outputs = tensorFiles(r[SpecKeys.Reference.OUTPUTS], "reference.outputs", p)
                )
            }
            val arts = root[SpecKeys.Top.ARTIFACTS] as? List<*>
            if (arts == null || arts.isEmpty()) p.add("artifacts: expected a non-empty array")
            val artifacts = (arts ?: emptyList<Any?>()).mapIndexed { i, a ->
                val m = a as? Map<*, *> ?: emptyMap<String, Any?>()
                val w = "artifacts[$i]"
                val backend = str(m, SpecKeys.Artifact.BACKEND, w, p)
                if (backend !in setOf("executorch", "onnx", "coreml")) p.add("$w.backend: unknown backend '$backend'")
                ArtifactSpec(
                    id = str(m, SpecKeys.Artifact.ID, w, p),
                    backend = backend,
                    scheme = str(m, SpecKeys.Artifact.SCHEME, w, p),
                    path = str(m, SpecKeys.Artifact.PATH, w, p),
                    sha256 = str(m, SpecKeys.Artifact.SHA256, w, p),
                    extraFiles = (m[SpecKeys.Artifact.EXTRA_FILES] as? List<*>)?.map { it.toString() } ?: emptyList(),
                    inputs = tensorSpecs(m[SpecKeys.Artifact.INPUTS]),
                    outputs = tensorSpecs(m[SpecKeys.Artifact.OUTPUTS]),
                    runtime = requirement(m[SpecKeys.Artifact.RUNTIME], "$w.runtime", p)
                )
            }
            if (p.isNotEmpty()) throw SpecException(p)
            return Spec(runId, deviceId, settings, ref, artifacts, dir)
        }

        private fun str(m: Map<*, *>?, key: String, where: String, p: MutableList<String>): String {
            val v = m?.get(key)
            if (v !is String || v.length == 0) {
                p.add((if (where.length == 0) key else "$where.$key") + ": expected a non-empty string")
                return ""
            }
            return v
        }

        private fun int(m: Map<*, *>?, key: String, where: String, p: MutableList<String>): Int? {
            val v = m?.get(key)
            if (v !is Long) {
                p.add("$where.$key: expected an integer, got ${v ?: "nothing"}")
                return null
            }
            return v.toInt()
        }

        private fun tensorFiles(v: Any?, where: String, p: MutableList<String>): List<TensorFile> =
            (v as? List<*> ?: emptyList<Any?>()).mapIndexed { i, t ->
                val m = t as? Map<*, *> ?: emptyMap<String, Any?>()
                val w = "$where[$i]"
                val dtype = str(m, SpecKeys.TensorFile.DTYPE, w, p)
                if (dtype !in setOf("float32", "int64", "int32")) p.add("$w.dtype: unsupported dtype '$dtype'")
                TensorFile(
                    name = str(m, SpecKeys.TensorFile.NAME, w, p),
                    path = str(m, SpecKeys.TensorFile.PATH, w, p),
                    shape = (m[SpecKeys.TensorFile.SHAPE] as? List<*>)?.map { (it as Number).toLong() } ?: emptyList(),
                    dtype = dtype
                )
            }

        private fun requirement(v: Any?, where: String, p: MutableList<String>): RuntimeRequirement? {
            if (v == null) return null
            val m = v as? Map<*, *>
            if (m == null) {
                p.add("$where: expected an object")
                return null
            }
            return RuntimeRequirement(
                runtime = str(m, SpecKeys.Runtime.RUNTIME, where, p),
                minVersion = m[SpecKeys.Runtime.MIN_VERSION] as? String,
                fileIdentifier = m[SpecKeys.Runtime.FILE_IDENTIFIER] as? String
            )
        }

        private fun tensorSpecs(v: Any?): List<TensorSpec> =
            (v as? List<*> ?: emptyList<Any?>()).map { t ->
                val m = t as? Map<*, *> ?: emptyMap<String, Any?>()
                TensorSpec(
                    name = m[SpecKeys.TensorSpec.NAME] as? String ?: "",
                    shape = m[SpecKeys.TensorSpec.SHAPE] as? List<*> ?: emptyList<Any?>(),
                    dtype = m[SpecKeys.TensorSpec.DTYPE] as? String ?: "float32"
                )
            }
    }
}

class SpecException(val problems: List<String>) : RuntimeException("bad spec: " + problems.joinToString("; "))
