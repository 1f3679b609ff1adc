import Foundation

/// The u8 x s8 kernel ONNX Runtime would pick on a CPU with these features: mpk/hostcpu.py's rules, for the
/// result's device facts. Every iPhone and Apple-silicon Mac is arm64, whose int8 kernels never saturate.
public enum CpuInt8 {
    public static func kernel(abi: String, features: [String]) -> (name: String, saturates: Bool) {
        if abi.hasPrefix("arm64") || abi.hasPrefix("aarch64") {
            return features.contains("dotprod") ? ("arm64-udot", false) : ("arm64-neon", false)
        }
        return ("generic", false)
    }
}
