import BenchmarkCore
import Foundation
import SwiftUI
import UIKit

/// mpk's iOS runner. Launched by `xcrun devicectl device process launch ... org.mpk.bench --spec mpk/<run>/spec.json`
/// (path relative to Documents), it measures every artifact, writes Documents/mpk/<run_id>/result.json and THEN
/// Documents/mpk/<run_id>/DONE ("ok" or "error: <message>"), which mpk polls with `devicectl device copy from`.
@main
struct MpkBenchApp: App {
    init() {
        UIApplication.shared.isIdleTimerDisabled = true  // a dimmed screen changes the SoC's power state
        let args = ProcessInfo.processInfo.arguments
        if let i = args.firstIndex(of: "--spec"), i + 1 < args.count {
            let rel = args[i + 1]
            DispatchQueue.global(qos: .userInitiated).async { Bench.runAndReport(specRel: rel) }
        }
    }

    var body: some Scene { WindowGroup { Text("mpk bench") } }
}

enum Bench {
    static let documents = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]

    static func runAndReport(specRel: String) {
        let specURL = documents.appendingPathComponent(specRel)
        var outDir = documents.appendingPathComponent("mpk/\(specURL.deletingLastPathComponent().lastPathComponent)")
        do {
            let spec = try Spec.parse(Data(contentsOf: specURL), dir: specURL.deletingLastPathComponent())
            outDir = documents.appendingPathComponent("mpk/\(spec.runId)")
            try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
            let started = utcNow()
            let outcomes = spec.artifacts.map { measure(spec, $0) }
            var facts = DeviceFacts()
            facts.model = deviceModel()
            facts.osVersion = UIDevice.current.systemVersion
            facts.cores = ProcessInfo.processInfo.processorCount
            facts.battery = ["thermal_state": ProcessInfo.processInfo.thermalState.rawValue]
            let result = ResultWriter.build(spec: spec, version: "0.1.0", runtimes: ["coreml": "system", "executorch": "swiftpm"],
                                            emulated: isSimulator(), device: facts, started: started,
                                            finished: utcNow(), outcomes: outcomes)
            let data = try JSONSerialization.data(withJSONObject: result, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: outDir.appendingPathComponent("result.json"), options: .atomic)
            try Data("ok".utf8).write(to: outDir.appendingPathComponent("DONE"), options: .atomic)
        } catch {
            try? FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
            try? Data("error: \(error)".utf8).write(to: outDir.appendingPathComponent("DONE"), options: .atomic)
        }
    }

    static func measure(_ spec: Spec, _ art: Spec.Artifact) -> ArtifactOutcome {
        var o = ArtifactOutcome(artifact: art)
        do {
            guard let ref = spec.reference, !ref.inputs.isEmpty else {
                o.errorKind = "other"; o.errorMessage = "the iOS app needs reference inputs in the spec"; return o
            }
            let ins = try ref.inputs.map { try TensorIO.readSamples(spec.resolve($0.path), $0, samples: ref.samples) }
            let outs = try ref.outputs.map { try TensorIO.readSamples(spec.resolve($0.path), $0, samples: ref.samples) }
            let sample: (Int) -> [(values: [Float], shape: [Int])] = { s in zip(ins, ref.inputs).map { ($0.0[s], $0.1.shape) } }
            let baseline = Memory.footprintMB()
            let sampler = PeakSampler(); sampler.start()
            let t0 = DispatchTime.now().uptimeNanoseconds
            let runner: ModelRunner
            do { runner = try Runtimes.open(art, url: spec.resolve(art.path)) } catch let e as UnsupportedBackend {
                _ = sampler.stop(); o.errorKind = "unsupported"; o.errorMessage = "backend \(e.backend)"; return o
            } catch {
                _ = sampler.stop(); o.errorKind = "load"; o.errorMessage = "\(error)"; return o
            }
            o.loadMs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            let input0 = sample(0)
            let t = try BenchmarkLoop.run(spec.settings) { _ = try runner.run(input0) }
            o.memory = (baseline, sampler.stop())
            o.firstInferenceMs = t.firstMs; o.samplesMs = t.samplesMs; o.warmupIterations = spec.settings.warmupIterations
            let pred = try (0..<ref.samples).map { try runner.run(sample($0)) }
            let refPerSample = (0..<ref.samples).map { s in outs.map { $0[s] } }
            o.accuracy = Accuracy.metrics(pred: pred, ref: refPerSample, task: ref.task, firstOutputShape: ref.outputs[0].shape)
        } catch {
            o.errorKind = o.loadMs == nil ? "load" : "inference"; o.errorMessage = "\(error)"
        }
        return o
    }

    static func deviceModel() -> String {
        var sys = utsname(); uname(&sys)
        return withUnsafeBytes(of: &sys.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func isSimulator() -> Bool {
        #if targetEnvironment(simulator)
        return true
        #else
        return false
        #endif
    }

    static func utcNow() -> String {
        let f = ISO8601DateFormatter(); f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date())
    }
}
