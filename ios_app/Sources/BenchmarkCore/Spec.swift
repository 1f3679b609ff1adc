import Foundation

/// A parsed runner spec (mpk/contract/schemas/runner_spec.schema.json). Paths are relative to `dir`.
public struct Spec {
    public struct Settings {
        public let threads, warmupIterations, minIterations: Int
        public let cpuAffinity: [Int]?
        public let minSeconds: Double
        public let maxSeconds: Double?
        /// a separate profiled pass per artifact after its timed loop (mpk bench --profile)
        public var profile = false
    }

    public struct TensorFile {
        public let name, path, dtype: String
        public let shape: [Int]
        public var sampleElements: Int { shape.reduce(1, *) }
    }

    public struct Reference {
        public let samples: Int
        public let task: String?
        public let inputs, outputs: [TensorFile]
    }

    /// One tensor of the artifact's signature, in the manifest's order (CoreML binds its features by these names).
    public struct TensorSpec {
        public let name, dtype: String
        public let shape: [Any]
    }

    /// What the artifact needs at run time (the manifest's artifacts[].runtime; see `Compat`).
    public struct RuntimeRequirement {
        public let runtime: String
        public let minVersion, fileIdentifier: String?
        public let specVersion: Int?
    }

    public struct Artifact {
        public let id, backend, scheme, path, sha256: String
        public let extraFiles: [String]
        public let inputs, outputs: [TensorSpec]
        public let runtime: RuntimeRequirement?
    }

    public let runId, deviceId: String
    public let settings: Settings
    public let reference: Reference?
    public let artifacts: [Artifact]
    public let dir: URL

    public func resolve(_ rel: String) -> URL { dir.appendingPathComponent(rel) }

    /// Parse; every problem is collected with its JSON path and thrown together.
    public static func parse(_ data: Data, dir: URL) throws -> Spec {
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SpecError(problems: ["<root>: expected an object"])
        }
        var p: [String] = []
        func str(_ m: [String: Any], _ k: String, _ w: String) -> String {
            if let v = m[k] as? String, !v.isEmpty { return v }
            p.append("\(w.isEmpty ? k : w + "." + k): expected a non-empty string"); return ""
        }
        func int(_ m: [String: Any], _ k: String, _ w: String) -> Int {
            if let v = m[k] as? Int { return v }
            p.append("\(w).\(k): expected an integer"); return 0
        }
        if root[SpecKeys.Top.schemaVersion] as? String != SpecKeys.schemaVersionValue {
            p.append("schema_version: expected '\(SpecKeys.schemaVersionValue)'")
        }
        let s = root[SpecKeys.Top.settings] as? [String: Any] ?? [:]
        let settings = Settings(
            threads: int(s, SpecKeys.Settings.threads, "settings"),
            warmupIterations: int(s, SpecKeys.Settings.warmupIterations, "settings"),
            minIterations: int(s, SpecKeys.Settings.minIterations, "settings"),
            cpuAffinity: s[SpecKeys.Settings.cpuAffinity] as? [Int],
            minSeconds: (s[SpecKeys.Settings.minSeconds] as? NSNumber)?.doubleValue ?? 0,
            maxSeconds: (s[SpecKeys.Settings.maxSeconds] as? NSNumber)?.doubleValue,
            profile: (s[SpecKeys.Settings.profile] as? Bool) ?? false)
        func files(_ v: Any?, _ w: String) -> [TensorFile] {
            (v as? [[String: Any]] ?? []).enumerated().map { i, m in
                TensorFile(name: str(m, SpecKeys.TensorFile.name, "\(w)[\(i)]"),
                           path: str(m, SpecKeys.TensorFile.path, "\(w)[\(i)]"),
                           dtype: str(m, SpecKeys.TensorFile.dtype, "\(w)[\(i)]"),
                           shape: m[SpecKeys.TensorFile.shape] as? [Int] ?? [])
            }
        }
        var reference: Reference? = nil
        if let r = root[SpecKeys.Top.reference] as? [String: Any] {
            reference = Reference(samples: int(r, SpecKeys.Reference.samples, "reference"),
                                  task: r[SpecKeys.Reference.task] as? String,
                                  inputs: files(r[SpecKeys.Reference.inputs], "reference.inputs"),
                                  outputs: files(r[SpecKeys.Reference.outputs], "reference.outputs"))
        }
        func tensors(_ v: Any?) -> [TensorSpec] {
            (v as? [[String: Any]] ?? []).map {
                TensorSpec(name: $0[SpecKeys.TensorSpec.name] as? String ?? "",
                           dtype: $0[SpecKeys.TensorSpec.dtype] as? String ?? "float32",
                           shape: $0[SpecKeys.TensorSpec.shape] as? [Any] ?? [])
            }
        }
        func requirement(_ v: Any?, _ w: String) -> RuntimeRequirement? {
            guard let v = v else { return nil }
            guard let m = v as? [String: Any] else { p.append("\(w): expected an object"); return nil }
            return RuntimeRequirement(runtime: str(m, SpecKeys.Runtime.runtime, w),
                                      minVersion: m[SpecKeys.Runtime.minVersion] as? String,
                                      fileIdentifier: m[SpecKeys.Runtime.fileIdentifier] as? String,
                                      specVersion: m[SpecKeys.Runtime.specVersion] as? Int)
        }
        let arts = (root[SpecKeys.Top.artifacts] as? [[String: Any]] ?? []).enumerated().map { i, m in
            Artifact(id: str(m, SpecKeys.Artifact.id, "artifacts[\(i)]"),
                     backend: str(m, SpecKeys.Artifact.backend, "artifacts[\(i)]"),
                     scheme: str(m, SpecKeys.Artifact.scheme, "artifacts[\(i)]"),
                     path: str(m, SpecKeys.Artifact.path, "artifacts[\(i)]"),
                     sha256: str(m, SpecKeys.Artifact.sha256, "artifacts[\(i)]"),
                     extraFiles: m[SpecKeys.Artifact.extraFiles] as? [String] ?? [],
                     inputs: tensors(m[SpecKeys.Artifact.inputs]),
                     outputs: tensors(m[SpecKeys.Artifact.outputs]),
                     runtime: requirement(m[SpecKeys.Artifact.runtime], "artifacts[\(i)].runtime"))
        }
        if arts.isEmpty { p.append("artifacts: expected a non-empty array") }
        if !p.isEmpty { throw SpecError(problems: p) }
        return Spec(runId: str(root, SpecKeys.Top.runId, ""), deviceId: str(root, SpecKeys.Top.deviceId, ""),
                    settings: settings, reference: reference, artifacts: arts, dir: dir)
    }
}

public struct SpecError: Error, CustomStringConvertible {
    public let problems: [String]
    public var description: String { "bad spec: " + problems.joined(separator: "; ") }
}

/// Reads the reference .bin files: N samples stacked on a leading axis, raw little-endian.
public enum TensorIO {
    public static func readSamples(_ url: URL, _ t: Spec.TensorFile, samples: Int) throws -> [[Float]] {
        let data = try Data(contentsOf: url)
        let per = t.sampleElements
        let width = t.dtype == "int64" ? 8 : 4
        guard data.count == per * samples * width else {
            throw SpecError(problems: ["\(t.path): expected \(per * samples * width) bytes, found \(data.count)"])
        }
        return data.withUnsafeBytes { raw in
            (0..<samples).map { s in
                (0..<per).map { i in
                    let off = (s * per + i) * width
                    switch t.dtype {
                    case "float32": return Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: off, as: UInt32.self)))
                    case "int32": return Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: off, as: Int32.self)))
                    default: return Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: off, as: Int64.self)))
                    }
                }
            }
        }
    }
}
