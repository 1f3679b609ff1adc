import BenchmarkCore
import CoreML
import ExecuTorch
import Foundation

/// One loaded model behind one interface: one sample's inputs (flat floats + shape) in, flat outputs out.
protocol ModelRunner {
    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]]
}

/// CoreML: the .mlpackage is compiled on device (MLModel.compileModel(at:)), which is part of load_ms,
/// exactly as a production app pays it on first launch. computeUnits .all lets CoreML pick ANE/GPU/CPU.
final class CoreMLRunner: ModelRunner {
    let model: MLModel
    let inputNames: [String]

    init(url: URL) throws {
        let compiled = try MLModel.compileModel(at: url)
        let config = MLModelConfiguration()
        config.computeUnits = .all
        model = try MLModel(contentsOf: compiled, configuration: config)
        inputNames = model.modelDescription.inputDescriptionsByName.keys.sorted()
    }

    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]] {
        var feats: [String: MLFeatureValue] = [:]
        for (name, t) in zip(inputNames, inputs) {
            let arr = try MLMultiArray(shape: t.shape.map { NSNumber(value: $0) }, dataType: .float32)
            arr.withUnsafeMutableBufferPointer(ofType: Float.self) { buf, _ in
                for i in 0..<t.values.count { buf[i] = t.values[i] }
            }
            feats[name] = MLFeatureValue(multiArray: arr)
        }
        let out = try model.prediction(from: MLDictionaryFeatureProvider(dictionary: feats))
        return out.featureNames.sorted().compactMap { name in
            guard let a = out.featureValue(for: name)?.multiArrayValue else { return nil }
            return (0..<a.count).map { a[$0].floatValue }
        }
    }
}

/// ExecuTorch through its Swift package (`Module`). Threads are the XNNPACK pool's default: the Swift API
/// exposes no per-module thread count, and results record the spec's threads as requested, not applied.
final class ExecuTorchRunner: ModelRunner {
    let module: Module

    init(url: URL) throws {
        module = Module(filePath: url.path)
        try module.load("forward")
    }

    func run(_ inputs: [(values: [Float], shape: [Int])]) throws -> [[Float]] {
        let tensors = inputs.map { Tensor<Float>($0.values, shape: $0.shape) }
        let outputs = try module.forward(tensors)
        return outputs.compactMap { value in (value.tensor as Tensor<Float>?)?.scalars() }
    }
}

enum Runtimes {
    static func open(_ art: Spec.Artifact, url: URL) throws -> ModelRunner {
        switch art.backend {
        case "coreml": return try CoreMLRunner(url: url)
        case "executorch": return try ExecuTorchRunner(url: url)
        default: throw UnsupportedBackend(backend: art.backend)
        }
    }
}

struct UnsupportedBackend: Error { let backend: String }
