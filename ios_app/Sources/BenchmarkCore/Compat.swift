import Foundation

/// The runtime versions the iOS app links. ExecuTorch's Swift package exposes no version at run time, so the pin
/// is written here once; mpk's tests/unit/test_apps_runtime_api.py checks it equals the swiftpm-<version> branch in
/// MpkBenchApp/Package.swift. CoreML's version is the OS's.
public enum RuntimeVersions {
    public static let executorch = "1.4.1"
}

/// The app's own check, before it loads an artifact, that its linked runtime can load it: the rules of
/// runners/compat.py (which `mpk bench` applies before pushing), from the requirement the manifest recorded.
/// - executorch: no forward compatibility (ExecuTorch runtime/COMPATIBILITY.md): a runtime older (major.minor)
///   than the exporter's is refused; ExecuTorch 1.0...1.4 load only programs whose file identifier is "ET12".
/// - coreml: the OS must be at least the model's CoreML specification version's first iOS (coremltools).
/// Returns nil when the runtime can load it or it cannot be judged.
public enum Compat {
    public static let etFileIdentifier = "ET12"

    public static func refusal(_ req: Spec.RuntimeRequirement?, linked: [String: String]) -> String? {
        guard let req = req, let have = linked[req.runtime] else { return nil }
        switch req.runtime {
        case "executorch":
            let h = minor(have)
            let identifierKnown = !h.lexicographicallyPrecedes([1, 0]) && ![1, 4].lexicographicallyPrecedes(h)
            if let id = req.fileIdentifier, identifierKnown, id != etFileIdentifier {
                return "the .pte's file identifier is '\(id)' but ExecuTorch \(have) loads only '\(etFileIdentifier)'"
            }
            if let need = req.minVersion, h.lexicographicallyPrecedes(minor(need)) {
                return "the .pte needs ExecuTorch >= \(need); this app links ExecuTorch \(have) (ExecuTorch guarantees no forward compatibility)"
            }
        case "coreml":
            let os = have.split(separator: " ").last.map(String.init) ?? have
            if let need = req.minVersion, numbers(os).lexicographicallyPrecedes(numbers(need)) {
                return "the model needs iOS >= \(need) (CoreML spec \(req.specVersion.map(String.init) ?? "?")); this device runs iOS \(os)"
            }
        default:
            break
        }
        return nil
    }

    /// "1.4.1" -> [1, 4]; "1.4.0a0" -> [1, 4].
    static func minor(_ v: String) -> [Int] {
        let n = numbers(v)
        return [n.count > 0 ? n[0] : 0, n.count > 1 ? n[1] : 0]
    }

    static func numbers(_ v: String) -> [Int] {
        v.split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
    }
}
