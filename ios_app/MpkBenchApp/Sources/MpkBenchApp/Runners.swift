import BenchmarkCore
import CoreML
import CryptoKit
import ExecuTorch
import Foundation
import UIKit

/// CoreML: the .mlpackage is compiled on device (MLModel.compileModel(at:)), which is part of load_ms, exactly as a
/// production app pays it on first launch. computeUnits .all lets CoreML pick ANE/GPU/CPU. Features are bound by the
/// manifest's input and output NAMES, in the manifest's ORDER (the model's own names when the spec has none).
final class CoreMLRunner: ModelRunner {
    let model: MLModel
    let inputNames: [String]
    let outputNames: [String]

    init(url: URL, artifact: Spec.Artifact) throws {
        let compiled = try MLModel.compileModel(at: url)
        let config = MLModelConfiguration()
        config.computeUnits = .all
        model = try MLModel(contentsOf: compiled, configuration: config)
        let desc = model.modelDescription
        inputNames = artifact.inputs.isEmpty ? desc.inputDescriptionsByName.keys.sorted() : artifact.inputs.map(\.name)
        outputNames = artifact.outputs.isEmpty ? desc.outputDescriptionsByName.keys.sorted() : artifact.outputs.map(\.name)
        let missing = inputNames.filter { desc.inputDescriptionsByName[$0] == nil }
            + outputNames.filter { desc.outputDescriptionsByName[$0] == nil }
        if !missing.isEmpty { throw RunnerError("the model has no feature named \(missing); the manifest and the model disagree") }
    }

    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]] {
        guard inputs.count == inputNames.count else {
            throw RunnerError("the model takes \(inputNames.count) inputs, got \(inputs.count)")
        }
        var feats: [String: MLFeatureValue] = [:]
        for (name, t) in zip(inputNames, inputs) {
            let type = model.modelDescription.inputDescriptionsByName[name]?.multiArrayConstraint?.dataType ?? .float32
            let arr = try MLMultiArray(shape: t.shape.map { NSNumber(value: $0) }, dataType: type)
            if type == .float32 {
                arr.withUnsafeMutableBufferPointer(ofType: Float.self) { buf, _ in
                    for i in 0..<t.values.count { buf[i] = t.values[i] }
                }
            } else {
                for i in 0..<t.values.count { arr[i] = NSNumber(value: t.values[i]) }
            }
            feats[name] = MLFeatureValue(multiArray: arr)
        }
        let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: feats))
        return try outputNames.map { name in
            guard let a = out.featureValue(for: name)?.multiArrayValue else { throw RunnerError("output \(name) is not a tensor") }
            return (0..<a.count).map { a[$0].floatValue }
        }
    }
}

/// ExecuTorch through its Swift package (`Module`, API of swiftpm-1.4.1; android_app/README.md lists the calls and
/// where they were checked). Threads are the XNNPACK pool's default: the Swift API has no per-module thread count.
final class ExecuTorchRunner: ModelRunner {
    let module: Module
    let int64Inputs: [Bool]

    init(url: URL, artifact: Spec.Artifact) throws {
        module = Module(filePath: url.path)
        try module.load("forward")  // method loading is part of load_ms, not of the first inference
        int64Inputs = artifact.inputs.map { $0.dtype == "int64" }
    }

    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]] {
        let values: [ValueConvertible] = inputs.enumerated().map { i, t -> ValueConvertible in
            if i < int64Inputs.count && int64Inputs[i] {
                return Tensor<Int64>(t.values.map { Int64($0) }, shape: t.shape)
            }
            return Tensor<Float>(t.values, shape: t.shape)
        }
        let outputs: [Value] = try module.forward(values)
        return try outputs.enumerated().map { i, value in
            // tensor() is generic: the element type comes from the annotation, nil when the dtype differs
            guard let t: Tensor<Float> = value.tensor() else { throw RunnerError("output \(i) is not a float32 tensor") }
            return t.scalars()
        }
    }
}

struct RunnerError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The runtimes this app links: ExecuTorch (the swiftpm branch it was built with) and CoreML (the OS's).
struct AppRuntimes: RuntimeHost {
    var versions: [String: String] {
        [ResultKeys.Runtimes.executorch: RuntimeVersions.executorch,
         ResultKeys.Runtimes.coreml: "ios \(UIDevice.current.systemVersion)"]
    }

    /// Nothing to load late on iOS: ExecuTorch's SwiftPM products are static libraries linked into the app and
    /// CoreML.framework is linked at launch, so both are mapped before any baseline is read.
    func preload(_ backend: String) throws {
        guard backend == "coreml" || backend == "executorch" else { throw UnsupportedBackend(backend: backend) }
    }

    func open(_ artifact: Spec.Artifact, url: URL) throws -> ModelRunner {
        switch artifact.backend {
        case "coreml": return try CoreMLRunner(url: url, artifact: artifact)
        case "executorch": return try ExecuTorchRunner(url: url, artifact: artifact)
        default: throw UnsupportedBackend(backend: artifact.backend)
        }
    }

    /// The profiled pass: neither runtime's public API times single ops on iOS, so the result says so (mpk's
    /// per-unit ExecuTorch estimate needs the host's lowering; it runs on the host runner and the virtual device).
    func profile(_ artifact: Spec.Artifact, url: URL) -> [String: Any] {
        if artifact.backend == "executorch" {
            return Profiles.unavailable(
                method: "ExecuTorch Swift package",
                limits: ["the ExecuTorch Swift API (swiftpm-1.4.1, extension/apple/ExecuTorch/Exported) declares no ETDump or profiling call: no op is timed on its own here"],
                runtime: "executorch " + RuntimeVersions.executorch)
        }
        return Profiles.unavailable(
            method: "CoreML",
            limits: ["CoreML reports no per-op time; MLComputePlan (iOS 17.4+) gives estimated relative costs per op, which this app does not read yet"])
    }

    /// packager/manifest.py sha256_path: a file's SHA-256; for a directory (.mlpackage) the SHA-256 over its files
    /// in path order (components compared in turn), each as relative path + NUL + the file's own SHA-256 digest.
    func sha256(_ url: URL) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw RunnerError("no such file: \(url.path)")
        }
        guard isDir.boolValue else { return try hex(fileDigest(url)) }
        let base = url.standardizedFileURL.pathComponents.count
        var files: [(rel: [String], url: URL)] = []
        let walker = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.isRegularFileKey])
        while let f = walker?.nextObject() as? URL {
            if (try? f.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
                files.append((Array(f.standardizedFileURL.pathComponents.dropFirst(base)), f))
            }
        }
        files.sort { $0.rel.lexicographicallyPrecedes($1.rel) }
        var h = SHA256()
        for f in files {
            h.update(data: Data(f.rel.joined(separator: "/").utf8) + Data([0]))
            let digest = try fileDigest(f.url)
            h.update(data: Data(digest))
        }
        return hex(h.finalize())
    }

    private func fileDigest(_ url: URL) throws -> SHA256.Digest {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var h = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { h.update(data: chunk) }
        return h.finalize()
    }

    private func hex(_ d: SHA256.Digest) -> String { d.map { String(format: "%02x", $0) }.joined() }
}
