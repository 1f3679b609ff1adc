package org.mpk.bench.contract

/**
 * Every JSON key the app writes into result.json, one nested object per object
 * of mpk/contract/schemas/runner_result.schema.json.
 *
 * Why all keys live here: mpk's test (tests/unit/test_apps_contract_keys.py)
 * reads the `const val` literals of each nested object below and checks they
 * are EXACTLY the property names of the matching schema object. A key typed
 * anywhere else would escape that check, so the writer uses only these names.
 */
object ResultKeys {
    const val SCHEMA_VERSION_VALUE = "mpk.runner-result/1"

    /** the root object */
    object Top {
        const val SCHEMA_VERSION = "schema_version"
        const val RUN_ID = "run_id"
        const val DEVICE_ID = "device_id"
        const val RUNNER = "runner"
        const val EMULATED = "emulated"
        const val DEVICE = "device"
        const val SETTINGS = "settings"
        const val STARTED_UTC = "started_utc"
        const val FINISHED_UTC = "finished_utc"
        const val ARTIFACTS = "artifacts"
    }

    /** properties.runner */
    object Runner {
        const val NAME = "name"
        const val VERSION = "version"
        const val RUNTIMES = "runtimes"
    }

    /** properties.runner.properties.runtimes: the runtime versions the app links (coreml is the iOS app's) */
    object Runtimes {
        const val EXECUTORCH = "executorch"
        const val ONNXRUNTIME = "onnxruntime"
        const val COREML = "coreml"
    }

    /** properties.settings */
    object Settings {
        const val THREADS = "threads"
        const val CPU_AFFINITY = "cpu_affinity"
        const val WARMUP_ITERATIONS = "warmup_iterations"
        const val MIN_ITERATIONS = "min_iterations"
        const val MIN_SECONDS = "min_seconds"
        const val MAX_SECONDS = "max_seconds"
        const val PROFILE = "profile"
    }

    /** $defs.device_facts */
    object Device {
        const val MODEL = "model"
        const val MANUFACTURER = "manufacturer"
        const val SOC = "soc"
        const val ABI = "abi"
        const val OS = "os"
        const val OS_VERSION = "os_version"
        const val CORES = "cores"
        const val GOVERNOR = "governor"
        const val CPU_MAX_FREQ_KHZ = "cpu_max_freq_khz"
        const val HOST_CPU = "host_cpu"
        const val TEMPERATURES_C_BEFORE = "temperatures_c_before"
        const val TEMPERATURES_C_AFTER = "temperatures_c_after"
        const val BATTERY = "battery"
        const val CPU_FEATURES = "cpu_features"
        const val INT8_KERNEL = "int8_kernel"
    }

    /** $defs.device_facts.int8_kernel */
    object Int8Kernel {
        const val NAME = "name"
        const val SATURATES = "saturates"
    }

    /** $defs.artifact_result */
    object Artifact {
        const val ID = "id"
        const val BACKEND = "backend"
        const val SCHEME = "scheme"
        const val STATUS = "status"
        const val ERROR = "error"
        const val LOAD_MS = "load_ms"
        const val FIRST_INFERENCE_MS = "first_inference_ms"
        const val WARMUP_ITERATIONS = "warmup_iterations"
        const val ITERATIONS = "iterations"
        const val SAMPLES_MS = "samples_ms"
        const val STATS = "stats"
        const val MEMORY = "memory"
        const val ACCURACY = "accuracy"
        const val PROFILE = "profile"
    }

    /** $defs.profile: the separate profiled pass after the timed loop (contract/Profile.kt) */
    object Profile {
        const val STATUS = "status"
        const val METHOD = "method"
        const val GRANULARITY = "granularity"
        const val RUNTIME = "runtime"
        const val KERNEL = "kernel"
        const val RUNS = "runs"
        const val OPS = "ops"
        const val PER_RUN_MS = "per_run_ms"
        const val PROFILED_MS = "profiled_ms"
        const val UNPROFILED_P50_MS = "unprofiled_p50_ms"
        const val UNPROFILED_MEAN_MS = "unprofiled_mean_ms"
        const val VS_P50 = "vs_p50"
        const val OVERHEAD = "overhead"
        const val ATTRIBUTED_SHARE = "attributed_share"
        const val SOURCE_MAP = "source_map"
        const val LIMITS = "limits"
        const val NOTES = "notes"
    }

    /** $defs.profile_op: one op row (module, unit and source are filled in by mpk from the package's op map) */
    object ProfileOp {
        const val NAME = "name"
        const val OP_TYPE = "op_type"
        const val PROVIDER = "provider"
        const val DELEGATED = "delegated"
        const val CALLS = "calls"
        const val TOTAL_MS = "total_ms"
        const val MEAN_MS = "mean_ms"
        const val SHARE = "share"
        const val MODULE = "module"
        const val UNIT = "unit"
        const val SOURCE = "source"
        const val ESTIMATED = "estimated"
        const val OP_COUNTS = "op_counts"
        const val DELEGATED_OPS = "delegated_ops"
    }

    /** $defs.artifact_result.properties.error */
    object Error {
        const val KIND = "kind"
        const val MESSAGE = "message"
    }

    /** $defs.stats */
    object Stats {
        const val N = "n"
        const val MEAN_MS = "mean_ms"
        const val TRIMMED_MEAN_MS = "trimmed_mean_ms"
        const val STD_MS = "std_ms"
        const val CV = "cv"
        const val MIN_MS = "min_ms"
        const val P50_MS = "p50_ms"
        const val P90_MS = "p90_ms"
        const val P99_MS = "p99_ms"
        const val MAX_MS = "max_ms"
        const val P50_CI_MS = "p50_ci_ms"
        const val P90_CI_MS = "p90_ci_ms"
        const val CONFIDENCE = "confidence"
    }

    /** $defs.artifact_result.properties.memory */
    object Memory {
        const val BASELINE_RSS_MB = "baseline_rss_mb"
        const val PEAK_RSS_MB = "peak_rss_mb"
        const val RISE_MB = "rise_mb"
        const val PSS_MB = "pss_mb"
        const val SOURCE = "source"
    }

    /** $defs.artifact_result.properties.accuracy */
    object Accuracy {
        const val SAMPLES = "samples"
        const val MAX_ABS_ERROR = "max_abs_error"
        const val COSINE = "cosine"
        const val SNR_DB = "snr_db"
        const val TOP1_AGREEMENT = "top1_agreement"
        const val TOP1_COUNTED = "top1_counted"
    }
}

/**
 * Every key the app reads from spec.json, one nested object per object of
 * mpk/contract/schemas/runner_spec.schema.json. mpk's test checks each literal is a
 * property of that schema object, so a typo fails in CI, not on a phone.
 */
object SpecKeys {
    const val SCHEMA_VERSION_VALUE = "mpk.runner-spec/1"

    object Top {
        const val SCHEMA_VERSION = "schema_version"
        const val RUN_ID = "run_id"
        const val DEVICE_ID = "device_id"
        const val SETTINGS = "settings"
        const val REFERENCE = "reference"
        const val ARTIFACTS = "artifacts"
    }

    object Settings {
        const val THREADS = "threads"
        const val CPU_AFFINITY = "cpu_affinity"
        const val WARMUP_ITERATIONS = "warmup_iterations"
        const val MIN_ITERATIONS = "min_iterations"
        const val MIN_SECONDS = "min_seconds"
        const val MAX_SECONDS = "max_seconds"
        const val PROFILE = "profile"
    }

    object Reference {
        const val SAMPLES = "samples"
        const val TASK = "task"
        const val INPUTS = "inputs"
        const val OUTPUTS = "outputs"
    }

    object TensorFile {
        const val NAME = "name"
        const val PATH = "path"
        const val SHAPE = "shape"
        const val DTYPE = "dtype"
    }

    object Artifact {
        const val ID = "id"
        const val BACKEND = "backend"
        const val SCHEME = "scheme"
        const val PATH = "path"
        const val SHA256 = "sha256"
        const val EXTRA_FILES = "extra_files"
        const val INPUTS = "inputs"
        const val OUTPUTS = "outputs"
        const val RUNTIME = "runtime"
    }

    /** properties.artifacts.items.properties.runtime: what the artifact needs (the app checks it, [Compat]) */
    object Runtime {
        const val RUNTIME = "runtime"
        const val MIN_VERSION = "min_version"
        const val FILE_IDENTIFIER = "file_identifier"
    }

    object TensorSpec {
        const val NAME = "name"
        const val SHAPE = "shape"
        const val DTYPE = "dtype"
    }
}
