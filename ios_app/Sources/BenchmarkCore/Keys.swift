import Foundation

// Every JSON key the app writes (ResultKeys) or reads (SpecKeys), one nested enum per object of
// mpk/contract/schemas/runner_result.schema.json / runner_spec.schema.json. mpk's tests/unit/test_apps_contract_keys.py
// checks these literals against the schemas, so the writers must use only these names.

public enum ResultKeys {
    public static let schemaVersionValue = "mpk.runner-result/1"

    public enum Top {
        public static let schemaVersion = "schema_version"
        public static let runId = "run_id"
        public static let deviceId = "device_id"
        public static let runner = "runner"
        public static let emulated = "emulated"
        public static let device = "device"
        public static let settings = "settings"
        public static let startedUtc = "started_utc"
        public static let finishedUtc = "finished_utc"
        public static let artifacts = "artifacts"
    }

    public enum Runner {
        public static let name = "name"
        public static let version = "version"
        public static let runtimes = "runtimes"
    }

    /// runner.runtimes: the runtime versions the app links (onnxruntime is the Android app's)
    public enum Runtimes {
        public static let executorch = "executorch"
        public static let onnxruntime = "onnxruntime"
        public static let coreml = "coreml"
    }

    public enum Settings {
        public static let threads = "threads"
        public static let cpuAffinity = "cpu_affinity"
        public static let warmupIterations = "warmup_iterations"
        public static let minIterations = "min_iterations"
        public static let minSeconds = "min_seconds"
        public static let maxSeconds = "max_seconds"
        public static let profile = "profile"
    }

    public enum Device {
        public static let model = "model"
        public static let manufacturer = "manufacturer"
        public static let soc = "soc"
        public static let abi = "abi"
        public static let os = "os"
        public static let osVersion = "os_version"
        public static let cores = "cores"
        public static let governor = "governor"
        public static let cpuMaxFreqKhz = "cpu_max_freq_khz"
        public static let hostCpu = "host_cpu"
        public static let temperaturesCBefore = "temperatures_c_before"
        public static let temperaturesCAfter = "temperatures_c_after"
        public static let battery = "battery"
        public static let cpuFeatures = "cpu_features"
        public static let int8Kernel = "int8_kernel"
    }

    public enum Int8Kernel {
        public static let name = "name"
        public static let saturates = "saturates"
    }

    public enum Artifact {
        public static let id = "id"
        public static let backend = "backend"
        public static let scheme = "scheme"
        public static let status = "status"
        public static let error = "error"
        public static let loadMs = "load_ms"
        public static let firstInferenceMs = "first_inference_ms"
        public static let warmupIterations = "warmup_iterations"
        public static let iterations = "iterations"
        public static let samplesMs = "samples_ms"
        public static let stats = "stats"
        public static let memory = "memory"
        public static let accuracy = "accuracy"
        public static let profile = "profile"
    }

    public enum Error {
        public static let kind = "kind"
        public static let message = "message"
    }

    public enum Stats {
        public static let n = "n"
        public static let meanMs = "mean_ms"
        public static let trimmedMeanMs = "trimmed_mean_ms"
        public static let stdMs = "std_ms"
        public static let cv = "cv"
        public static let minMs = "min_ms"
        public static let p50Ms = "p50_ms"
        public static let p90Ms = "p90_ms"
        public static let p99Ms = "p99_ms"
        public static let maxMs = "max_ms"
        public static let p50CiMs = "p50_ci_ms"
        public static let p90CiMs = "p90_ci_ms"
        public static let confidence = "confidence"
    }

    public enum Memory {
        public static let baselineRssMb = "baseline_rss_mb"
        public static let peakRssMb = "peak_rss_mb"
        public static let riseMb = "rise_mb"
        public static let pssMb = "pss_mb"
        public static let source = "source"
    }

    public enum Accuracy {
        public static let samples = "samples"
        public static let maxAbsError = "max_abs_error"
        public static let cosine = "cosine"
        public static let snrDb = "snr_db"
        public static let top1Agreement = "top1_agreement"
        public static let top1Counted = "top1_counted"
    }

    /// $defs.profile: the separate profiled pass after the timed loop (Profile.swift)
    public enum Profile {
        public static let status = "status"
        public static let method = "method"
        public static let granularity = "granularity"
        public static let runtime = "runtime"
        public static let kernel = "kernel"
        public static let runs = "runs"
        public static let ops = "ops"
        public static let perRunMs = "per_run_ms"
        public static let profiledMs = "profiled_ms"
        public static let unprofiledP50Ms = "unprofiled_p50_ms"
        public static let unprofiledMeanMs = "unprofiled_mean_ms"
        public static let vsP50 = "vs_p50"
        public static let overhead = "overhead"
        public static let attributedShare = "attributed_share"
        public static let sourceMap = "source_map"
        public static let limits = "limits"
        public static let notes = "notes"
    }

    /// $defs.profile_op: one row (module, unit and source are filled in by mpk from the package's op map)
    public enum ProfileOp {
        public static let name = "name"
        public static let opType = "op_type"
        public static let provider = "provider"
        public static let delegated = "delegated"
        public static let calls = "calls"
        public static let totalMs = "total_ms"
        public static let meanMs = "mean_ms"
        public static let share = "share"
        public static let module = "module"
        public static let unit = "unit"
        public static let source = "source"
        public static let estimated = "estimated"
        public static let opCounts = "op_counts"
        public static let delegatedOps = "delegated_ops"
    }
}

public enum SpecKeys {
    public static let schemaVersionValue = "mpk.runner-spec/1"

    public enum Top {
        public static let schemaVersion = "schema_version"
        public static let runId = "run_id"
        public static let deviceId = "device_id"
        public static let settings = "settings"
        public static let reference = "reference"
        public static let artifacts = "artifacts"
    }

    public enum Settings {
        public static let threads = "threads"
        public static let cpuAffinity = "cpu_affinity"
        public static let warmupIterations = "warmup_iterations"
        public static let minIterations = "min_iterations"
        public static let minSeconds = "min_seconds"
        public static let maxSeconds = "max_seconds"
        public static let profile = "profile"
    }

    public enum Reference {
        public static let samples = "samples"
        public static let task = "task"
        public static let inputs = "inputs"
        public static let outputs = "outputs"
    }

    public enum TensorFile {
        public static let name = "name"
        public static let path = "path"
        public static let shape = "shape"
        public static let dtype = "dtype"
    }

    public enum Artifact {
        public static let id = "id"
        public static let backend = "backend"
        public static let scheme = "scheme"
        public static let path = "path"
        public static let sha256 = "sha256"
        public static let extraFiles = "extra_files"
        public static let inputs = "inputs"
        public static let outputs = "outputs"
        public static let runtime = "runtime"
    }

    /// artifacts[].runtime: what the artifact needs (the app checks it, `Compat`)
    public enum Runtime {
        public static let runtime = "runtime"
        public static let minVersion = "min_version"
        public static let fileIdentifier = "file_identifier"
        public static let specVersion = "spec_version"
    }

    public enum TensorSpec {
        public static let name = "name"
        public static let shape = "shape"
        public static let dtype = "dtype"
    }
}
