import Foundation

/// One artifact's outcome: timings (status ok) or an error kind from the schema's enum.
public struct ArtifactOutcome {
    public var artifact: Spec.Artifact
    public var errorKind: String? = nil  // load | inference | oom | unsupported | timeout | crash | other
    public var errorMessage: String? = nil
    public var loadMs: Double? = nil
    public var firstInferenceMs: Double? = nil
    public var warmupIterations = 0
    public var samplesMs: [Double] = []
    /// baseline before the model loads (runtime already loaded), peak up to the end of the timed loop (MB = 2^20 bytes)
    public var memory: (baseline: Double, peak: Double)? = nil
    public var memorySource = "task_info(TASK_VM_INFO) phys_footprint, peak sampled"
    public var accuracy: [String: Any]? = nil
    /// the profiled pass (Profile.swift), when the spec asked for one
    public var profile: [String: Any]? = nil

    public init(artifact: Spec.Artifact) { self.artifact = artifact }

    public func toJSON() -> [String: Any] {
        let ok = errorKind == nil
        let stats: Any = ok && !samplesMs.isEmpty ? ((try? LatencyStats(samplesMs: samplesMs))?.toJSON() ?? NSNull()) : NSNull()
        let error: Any = ok ? NSNull() : [ResultKeys.Error.kind: errorKind!, ResultKeys.Error.message: errorMessage ?? errorKind!]
        var mem: Any = NSNull()
        if let m = memory {
            mem = [ResultKeys.Memory.baselineRssMb: m.baseline, ResultKeys.Memory.peakRssMb: m.peak,
                   ResultKeys.Memory.riseMb: m.peak - m.baseline, ResultKeys.Memory.pssMb: NSNull(),
                   ResultKeys.Memory.source: memorySource]
        }
        return [
            ResultKeys.Artifact.id: artifact.id, ResultKeys.Artifact.backend: artifact.backend,
            ResultKeys.Artifact.scheme: artifact.scheme, ResultKeys.Artifact.status: ok ? "ok" : "error",
            ResultKeys.Artifact.error: error, ResultKeys.Artifact.loadMs: loadMs ?? NSNull(),
            ResultKeys.Artifact.firstInferenceMs: firstInferenceMs ?? NSNull(),
            ResultKeys.Artifact.warmupIterations: warmupIterations, ResultKeys.Artifact.iterations: samplesMs.count,
            ResultKeys.Artifact.samplesMs: samplesMs, ResultKeys.Artifact.stats: stats,
            ResultKeys.Artifact.memory: mem, ResultKeys.Artifact.accuracy: accuracy ?? NSNull(),
            ResultKeys.Artifact.profile: profile ?? NSNull(),
        ]
    }
}

public struct DeviceFacts {
    public var model = "unknown", abi = "arm64", os = "ios", cores = 0
    public var manufacturer: String? = "Apple", soc: String? = nil, osVersion: String? = nil
    public var temperaturesBefore: [String: Double] = [:], temperaturesAfter: [String: Double] = [:]
    public var battery: [String: Any]? = nil
    /// int8-relevant CPU features ("neon", "dotprod", "i8mm"; see CpuInt8); nil where unreadable
    public var cpuFeatures: [String]? = nil
    public init() {}

    public func toJSON() -> [String: Any] {
        [
            ResultKeys.Device.model: model, ResultKeys.Device.manufacturer: manufacturer ?? NSNull(),
            ResultKeys.Device.soc: soc ?? NSNull(), ResultKeys.Device.abi: abi, ResultKeys.Device.os: os,
            ResultKeys.Device.osVersion: osVersion ?? NSNull(), ResultKeys.Device.cores: cores,
            // iOS exposes neither cpufreq governors nor frequencies nor raw thermal zones to apps.
            ResultKeys.Device.governor: NSNull(), ResultKeys.Device.cpuMaxFreqKhz: NSNull(),
            ResultKeys.Device.hostCpu: NSNull(),
            ResultKeys.Device.temperaturesCBefore: temperaturesBefore,
            ResultKeys.Device.temperaturesCAfter: temperaturesAfter,
            ResultKeys.Device.battery: battery ?? NSNull(),
            ResultKeys.Device.cpuFeatures: cpuFeatures ?? NSNull(),
            ResultKeys.Device.int8Kernel: cpuFeatures.map { features -> [String: Any] in
                let k = CpuInt8.kernel(abi: abi, features: features)
                return [ResultKeys.Int8Kernel.name: k.name, ResultKeys.Int8Kernel.saturates: k.saturates]
            } ?? NSNull(),
        ]
    }
}

public enum ResultWriter {
    public static func build(spec: Spec, version: String, runtimes: [String: String], emulated: Bool,
                             device: DeviceFacts, started: String, finished: String,
                             outcomes: [ArtifactOutcome]) -> [String: Any] {
        let s = spec.settings
        return [
            ResultKeys.Top.schemaVersion: ResultKeys.schemaVersionValue,
            ResultKeys.Top.runId: spec.runId,
            ResultKeys.Top.deviceId: spec.deviceId,
            ResultKeys.Top.runner: [ResultKeys.Runner.name: "ios_app", ResultKeys.Runner.version: version,
                                    ResultKeys.Runner.runtimes: runtimes],
            ResultKeys.Top.emulated: emulated,
            ResultKeys.Top.device: device.toJSON(),
            ResultKeys.Top.settings: [
                ResultKeys.Settings.threads: s.threads, ResultKeys.Settings.cpuAffinity: s.cpuAffinity ?? NSNull(),
                ResultKeys.Settings.warmupIterations: s.warmupIterations,
                ResultKeys.Settings.minIterations: s.minIterations, ResultKeys.Settings.minSeconds: s.minSeconds,
                ResultKeys.Settings.maxSeconds: s.maxSeconds ?? NSNull(),
                ResultKeys.Settings.profile: s.profile,
            ] as [String: Any],
            ResultKeys.Top.startedUtc: started,
            ResultKeys.Top.finishedUtc: finished,
            ResultKeys.Top.artifacts: outcomes.map { $0.toJSON() },
        ]
    }
}

/// The same stopping rule as runners/host_runner.py and the Android app's BenchmarkLoop.
public enum BenchmarkLoop {
    public static func run(_ s: Spec.Settings, clock: () -> UInt64 = { DispatchTime.now().uptimeNanoseconds },
                           infer: () throws -> Void) rethrows -> (firstMs: Double, samplesMs: [Double]) {
        let t0 = clock(); try infer(); let first = Double(clock() - t0) / 1e6
        for _ in 0..<s.warmupIterations { try infer() }
        var samples: [Double] = []
        let start = clock()
        while true {
            let elapsed = Double(clock() - start)
            if samples.count >= s.minIterations && elapsed >= s.minSeconds * 1e9 { break }
            if let mx = s.maxSeconds, !samples.isEmpty, elapsed >= mx * 1e9 { break }
            let a = clock(); try infer(); samples.append(Double(clock() - a) / 1e6)
        }
        return (first, samples)
    }
}
