import Foundation

/// One loaded model: one sample's inputs (flat values + shape, in the manifest's input order) in, one flat array per
/// output (in the manifest's output order) out.
public protocol ModelRunner {
    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]]
}

/// The runtimes the app links (the app: CoreML + ExecuTorch; tests: a fake).
public protocol RuntimeHost {
    /// Runtime name (runner.runtimes keys: "executorch", "coreml") -> linked version.
    var versions: [String: String] { get }
    /// Load `backend`'s frameworks now, so the pre-load baseline already includes them.
    func preload(_ backend: String) throws
    func open(_ artifact: Spec.Artifact, url: URL) throws -> ModelRunner
    /// Lower-case hex SHA-256 of a file or directory (an .mlpackage), as packager/manifest.py sha256_path.
    func sha256(_ url: URL) throws -> String
    /// The profiled pass after the timed loop ($defs.profile): per-op times where the runtime gives them, else
    /// `Profiles.unavailable` saying why.
    func profile(_ artifact: Spec.Artifact, url: URL) -> [String: Any]
}

extension RuntimeHost {
    public func profile(_ artifact: Spec.Artifact, url: URL) -> [String: Any] {
        Profiles.unavailable(method: "no profiler for \(artifact.backend) artifacts in this runner", limits: [])
    }
}

/// The app's memory in MB (2^20 bytes). iOS: phys_footprint, the peak sampled (MpkBenchApp/Memory.swift).
public protocol MemoryProbe {
    /// Start tracking the peak from the current footprint.
    func startPeak()
    func residentMb() -> Double
    /// The peak since `startPeak()`, and stop tracking.
    func stopPeak() -> Double
    var source: String { get }
}

public struct UnsupportedBackend: Error, CustomStringConvertible {
    public let backend: String
    public init(backend: String) { self.backend = backend }
    public var description: String { "backend '\(backend)' does not run in the iOS app" }
}

/// Measuring one artifact in the order that gives memory its ONE definition (runner_result.schema.json), the
/// same order as the host runner and the Android app (contract/Measure.kt):
/// 1. file sha256 and the runtime requirement (`Compat`) are checked, reference tensors read;
/// 2. the runtime is loaded (`RuntimeHost.preload`) BEFORE the baseline;
/// 3. baseline read, peak tracking started, the model loaded (load_ms);
/// 4. first inference, warm-up, timed loop;
/// 5. the peak read right after the timed loop, BEFORE the accuracy pass;
/// 6. the accuracy pass.
public enum Measurement {
    public static func measureOne(_ spec: Spec, _ art: Spec.Artifact, host: RuntimeHost, memory: MemoryProbe,
                                  clock: @escaping () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) -> ArtifactOutcome {
        var o = ArtifactOutcome(artifact: art)
        let url = spec.resolve(art.path)
        do {
            let digest = try host.sha256(url)
            if digest != art.sha256 {
                o.errorKind = "load"; o.errorMessage = "sha256 mismatch: spec \(art.sha256), file \(digest)"; return o
            }
        } catch {
            o.errorKind = "load"; o.errorMessage = "cannot read \(url.path): \(error)"; return o
        }
        if let why = Compat.refusal(art.runtime, linked: host.versions) {
            o.errorKind = "unsupported"; o.errorMessage = why; return o
        }
        guard let ref = spec.reference, !ref.inputs.isEmpty else {
            o.errorKind = "other"; o.errorMessage = "the iOS app needs reference inputs in the spec"; return o
        }
        let ins: [[[Float]]], outs: [[[Float]]]
        do {
            ins = try ref.inputs.map { try TensorIO.readSamples(spec.resolve($0.path), $0, samples: ref.samples) }
            outs = try ref.outputs.map { try TensorIO.readSamples(spec.resolve($0.path), $0, samples: ref.samples) }
        } catch {
            o.errorKind = "other"; o.errorMessage = "reference data: \(error)"; return o
        }
        let sample: (Int) -> [(values: [Float], shape: [Int])] = { s in zip(ins, ref.inputs).map { ($0.0[s], $0.1.shape) } }
        do {
            try host.preload(art.backend)
        } catch let e as UnsupportedBackend {
            o.errorKind = "unsupported"; o.errorMessage = "\(e)"; return o
        } catch {
            o.errorKind = "load"; o.errorMessage = "runtime frameworks: \(error)"; return o
        }
        let baseline = memory.residentMb()
        memory.startPeak()
        let t0 = clock()
        let runner: ModelRunner
        do {
            runner = try host.open(art, url: url)
        } catch let e as UnsupportedBackend {
            _ = memory.stopPeak(); o.errorKind = "unsupported"; o.errorMessage = "\(e)"; return o
        } catch {
            _ = memory.stopPeak(); o.errorKind = "load"; o.errorMessage = "\(error)"; return o
        }
        o.loadMs = Double(clock() - t0) / 1e6
        do {
            let input0 = sample(0)
            let t = try BenchmarkLoop.run(spec.settings, clock: clock) { _ = try runner.run(input0) }
            o.memory = (baseline, memory.stopPeak())
            o.memorySource = memory.source
            o.firstInferenceMs = t.firstMs; o.samplesMs = t.samplesMs; o.warmupIterations = spec.settings.warmupIterations
            let pred = try (0..<ref.samples).map { try runner.run(sample($0)) }
            let refPerSample = (0..<ref.samples).map { s in outs.map { $0[s] } }
            o.accuracy = Accuracy.metrics(pred: pred, ref: refPerSample, task: ref.task, firstOutputShape: ref.outputs[0].shape)
        } catch {
            if o.memory == nil { _ = memory.stopPeak() }
            o.errorKind = "inference"; o.errorMessage = "\(error)"
        }
        if spec.settings.profile && o.errorKind == nil, let stats = try? LatencyStats(samplesMs: o.samplesMs) {
            // 7. after everything else: the profile is a pass of its own, compared with the timed loop, never in it
            o.profile = Profiles.finish(host.profile(art, url: url), p50Ms: stats.p50Ms, meanMs: stats.meanMs)
        }
        return o
    }
}
