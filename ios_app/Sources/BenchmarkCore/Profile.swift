import Foundation

/// The profiled pass's result object ($defs.profile of runner_result.schema.json), as mpk/contract/profile.py and
/// the Android app's contract/Profile.kt build it. On iOS neither linked runtime times ops one by one through its
/// public API (ExecuTorch's Swift package has no ETDump call at v1.4.1; CoreML exposes no per-op time), so the app
/// reports what it cannot do instead of an empty table; mpk maps any op rows to PyTorch modules on the host.
public enum Profiles {
    public static func unavailable(method: String, limits: [String], runtime: String? = nil) -> [String: Any] {
        [ResultKeys.Profile.status: "unavailable", ResultKeys.Profile.method: method,
         ResultKeys.Profile.runtime: runtime ?? NSNull(), ResultKeys.Profile.runs: 0,
         ResultKeys.Profile.ops: [Any](), ResultKeys.Profile.limits: limits]
    }

    /// per_run_ms = every op's total_ms / runs; vs_p50 and overhead against the unprofiled loop's p50.
    public static func finish(_ profile: [String: Any], p50Ms: Double, meanMs: Double) -> [String: Any] {
        var p = profile
        let ops = p[ResultKeys.Profile.ops] as? [[String: Any]] ?? []
        let runs = max((p[ResultKeys.Profile.runs] as? Int) ?? 1, 1)
        p[ResultKeys.Profile.unprofiledP50Ms] = p50Ms
        p[ResultKeys.Profile.unprofiledMeanMs] = meanMs
        if ops.isEmpty {
            p[ResultKeys.Profile.perRunMs] = NSNull()
            return p
        }
        let perRun = ops.map { ($0[ResultKeys.ProfileOp.totalMs] as? Double) ?? 0 }.reduce(0, +) / Double(runs)
        p[ResultKeys.Profile.perRunMs] = perRun
        if p50Ms > 0 {
            p[ResultKeys.Profile.vsP50] = perRun / p50Ms - 1
            if let wall = p[ResultKeys.Profile.profiledMs] as? Double { p[ResultKeys.Profile.overhead] = wall / p50Ms - 1 }
        }
        return p
    }
}
