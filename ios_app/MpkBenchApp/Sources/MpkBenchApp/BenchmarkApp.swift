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
            // BenchmarkCore's Measurement holds the order that defines memory (runtime loaded before the baseline,
            // peak read before the accuracy pass) and the sha256 and runtime-version checks.
            let host = AppRuntimes()
            let outcomes = spec.artifacts.map { Measurement.measureOne(spec, $0, host: host, memory: FootprintMemory()) }
            var facts = DeviceFacts()
            facts.model = deviceModel()
            facts.osVersion = UIDevice.current.systemVersion
            facts.cores = ProcessInfo.processInfo.processorCount
            facts.cpuFeatures = armFeatures()
            facts.battery = ["thermal_state": ProcessInfo.processInfo.thermalState.rawValue]
            let result = ResultWriter.build(spec: spec, version: "0.1.0", runtimes: host.versions,
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

/// int8-relevant arm64 features as the kernel reports them (sysctl hw.optional.arm.FEAT_*), mpk's names.
func armFeatures() -> [String] {
    func has(_ name: String) -> Bool {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        return sysctlbyname(name, &value, &size, nil, 0) == 0 && value == 1
    }
    var out = ["neon"]
    if has("hw.optional.arm.FEAT_DotProd") { out.append("dotprod") }
    if has("hw.optional.arm.FEAT_I8MM") { out.append("i8mm") }
    return out.sorted()
}
