import Foundation

/// Latency summary computed exactly like runners/stats.py `LatencyStats.from_samples` (and the Android app's
/// LatencyStats.kt): numpy "linear" percentiles, sample std (ddof=1), 10%-each-side trimmed mean, and
/// distribution-free binomial order-statistic confidence intervals for p50 and p90.
public struct LatencyStats {
    public static let trim = 0.1
    public static let defaultConfidence = 0.95

    public let n: Int
    public let meanMs, trimmedMeanMs, stdMs, cv, minMs, p50Ms, p90Ms, p99Ms, maxMs: Double
    public let p50CiMs, p90CiMs: [Double]
    public let confidence: Double

    public init(samplesMs: [Double], confidence: Double = LatencyStats.defaultConfidence) throws {
        guard !samplesMs.isEmpty else { throw StatsError.noSamples }
        let a = samplesMs.sorted()
        guard a.allSatisfy({ $0.isFinite }), a[0] >= 0 else { throw StatsError.badSamples }
        let n = a.count
        let k = Int(Double(n) * LatencyStats.trim)
        let trimmed = n - 2 * k > 0 ? Array(a[k..<(n - k)]) : a
        let mean = a.reduce(0, +) / Double(n)
        let ss = a.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        let std = n > 1 ? (ss / Double(n - 1)).squareRoot() : 0
        self.n = n
        meanMs = mean
        trimmedMeanMs = trimmed.reduce(0, +) / Double(trimmed.count)
        stdMs = std
        cv = mean > 0 ? std / mean : 0
        minMs = a[0]
        p50Ms = LatencyStats.quantile(a, 0.5)
        p90Ms = LatencyStats.quantile(a, 0.9)
        p99Ms = LatencyStats.quantile(a, 0.99)
        maxMs = a[n - 1]
        p50CiMs = LatencyStats.quantileCi(a, 0.5, confidence)
        p90CiMs = LatencyStats.quantileCi(a, 0.9, confidence)
        self.confidence = confidence
    }

    /// numpy.quantile(a, q, method="linear") of sorted `a`, with numpy's virtual index and lerp.
    public static func quantile(_ a: [Double], _ q: Double) -> Double {
        let h = Double(a.count) * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0
        let lo = Int(h.rounded(.down))
        if lo >= a.count - 1 { return a[a.count - 1] }
        let g = h - Double(lo)
        let x = a[lo], y = a[lo + 1], d = y - x
        return g >= 0.5 ? y - d * (1 - g) : x + d * g
    }

    /// Distribution-free CI of the q-quantile: order statistics whose ranks come from Binomial(n, q).
    public static func quantileCi(_ a: [Double], _ q: Double, _ confidence: Double) -> [Double] {
        let n = a.count
        if n == 1 { return [a[0], a[0]] }
        let alpha = 1 - confidence
        let cdf = binomCdf(n, q)
        let loIdx = cdf.filter { $0 <= alpha / 2 }.count
        let left = cdf.prefix { $0 < 1 - alpha / 2 }.count
        return [a[max(1, loIdx) - 1], a[min(n, left + 1) - 1]]
    }

    static func binomCdf(_ n: Int, _ q: Double) -> [Double] {
        var logp = [Double](repeating: 0, count: n + 1)
        var logc = 0.0
        for k in 0...n {
            if k > 0 { logc += log(Double(n - k + 1)) - log(Double(k)) }
            logp[k] = logc + Double(k) * log(q) + Double(n - k) * log(1 - q)
        }
        let mx = logp.max() ?? 0
        let pmf = logp.map { exp($0 - mx) }
        let sum = pmf.reduce(0, +)
        var acc = 0.0
        return pmf.map { acc += $0 / sum; return acc }
    }

    public func toJSON() -> [String: Any] {
        [
            ResultKeys.Stats.n: n, ResultKeys.Stats.meanMs: meanMs, ResultKeys.Stats.trimmedMeanMs: trimmedMeanMs,
            ResultKeys.Stats.stdMs: stdMs, ResultKeys.Stats.cv: cv, ResultKeys.Stats.minMs: minMs,
            ResultKeys.Stats.p50Ms: p50Ms, ResultKeys.Stats.p90Ms: p90Ms, ResultKeys.Stats.p99Ms: p99Ms,
            ResultKeys.Stats.maxMs: maxMs, ResultKeys.Stats.p50CiMs: p50CiMs, ResultKeys.Stats.p90CiMs: p90CiMs,
            ResultKeys.Stats.confidence: confidence,
        ]
    }
}

public enum StatsError: Error { case noSamples, badSamples }
