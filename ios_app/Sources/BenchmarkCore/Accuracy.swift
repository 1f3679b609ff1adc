import Foundation

/// Agreement with the fp32 reference: mpk's ONE definition of each number, ported from packager/verify.py
/// `compute_metrics` (the reference; the Kotlin twin is compared with it number by number in mpk's CI):
/// - cosine: the MEAN over samples of each sample's cosine between artifact and fp32 outputs, all outputs of one
///   sample concatenated and flattened. Both vectors all zero: 1; only one zero: 0.
///   Example: samples ([1, 0] vs [1, 0]) and ([0, 1] vs [1, 0]) -> (1 + 0) / 2 = 0.5.
/// - snr_db: 10 log10(sum ref^2 / sum (p - ref)^2) over all samples; an exact match is 200, and never more.
/// - max_abs_error: the largest |p - ref|.
/// - top1_agreement: over the DECISIONS of the FIRST output on which the reference has a CLEAR top-1, the fraction
///   whose argmax matches; nil (NSNull) when none is clear. Tasks: classification (or (1, C) logits when no task):
///   a decision per sample; "language-model": per position (rows of the last axis); "segmentation": per pixel (the
///   class axis is the sample's axis 1). Clear: best - second best > 0 and >= clearMargin (0.5) x the population
///   standard deviation of the decision's scores. Example: [2.0, 1.98, 0, 0] is not clear; [2.0, 1.5, 0, 0] is.
/// - top1_counted: how many decisions were clear.
public enum Accuracy {
    public static let perfectSnrDb = 200.0
    public static let clearMargin = 0.5

    /// `pred` and `ref` are [sample][output] -> flat values.
    public static func metrics(pred: [[[Float]]], ref: [[[Float]]], task: String?, firstOutputShape: [Int]) -> [String: Any] {
        precondition(pred.count == ref.count && !ref.isEmpty, "expected \(ref.count) predicted samples, got \(pred.count)")
        var cosineSum = 0.0, refEnergy = 0.0, noise = 0.0, maxAbs = 0.0
        for (p, r) in zip(pred, ref) {
            precondition(p.count == r.count, "output count differs from the reference")
            var dot = 0.0, pp = 0.0, rr = 0.0, anyErr = false
            for (po, ro) in zip(p, r) {
                precondition(po.count == ro.count, "output size differs from the reference")
                for i in 0..<ro.count {
                    let pv = Double(po[i]), rv = Double(ro[i]), e = pv - rv
                    dot += pv * rv; pp += pv * pv; rr += rv * rv; noise += e * e
                    if e != 0 { anyErr = true }
                    maxAbs = max(maxAbs, abs(e))
                }
            }
            refEnergy += rr
            let denom = rr.squareRoot() * pp.squareRoot()
            cosineSum += denom > 0 ? dot / denom : (anyErr ? 0 : 1)
        }
        // no floor under refEnergy: a tiny reference (1e-25 logits) answered with zeros is 0 dB, not 185 (mpk/metrics.py)
        let snr: Double
        if noise == 0 {
            snr = perfectSnrDb
        } else if refEnergy == 0 {
            snr = -perfectSnrDb
        } else {
            snr = min(perfectSnrDb, max(-perfectSnrDb, 10 * log10(refEnergy / noise)))
        }
        let logits = firstOutputShape.count == 2 && firstOutputShape[0] == 1 && firstOutputShape[1] > 1
        var mode: String? = nil
        if task == "classification" || (task == nil && logits) { mode = "classification" }
        if task == "language-model" || task == "segmentation" { mode = task }
        var top1: Any = NSNull()
        var counted: Any = NSNull()
        if let mode = mode {
            var agree = 0, clearRows = 0
            for (p, r) in zip(pred, ref) {
                let rd = decisions(r[0], mode: mode, shape: firstOutputShape)
                let pd = decisions(p[0], mode: mode, shape: firstOutputShape)
                for (prow, rrow) in zip(pd, rd) where isClear(rrow) {
                    clearRows += 1
                    if argmax(prow) == argmax(rrow) { agree += 1 }
                }
            }
            counted = clearRows
            if clearRows > 0 { top1 = Double(agree) / Double(clearRows) }
        }
        return [
            ResultKeys.Accuracy.samples: ref.count,
            ResultKeys.Accuracy.maxAbsError: maxAbs,
            ResultKeys.Accuracy.cosine: cosineSum / Double(ref.count),
            ResultKeys.Accuracy.snrDb: snr,
            ResultKeys.Accuracy.top1Agreement: top1,
            ResultKeys.Accuracy.top1Counted: counted,
        ]
    }

    /// One sample's first output as rows of scores, one per decision.
    public static func decisions(_ v: [Float], mode: String, shape: [Int]) -> [[Float]] {
        if mode == "language-model", let width = shape.last, width > 0 {
            return stride(from: 0, to: v.count - width + 1, by: width).map { Array(v[$0..<($0 + width)]) }
        }
        if mode == "segmentation", shape.count >= 2 {
            let classes = shape[1]
            let spatial = shape.dropFirst(2).reduce(1, *)
            var rows: [[Float]] = []
            for b in 0..<shape[0] {
                for px in 0..<spatial {
                    rows.append((0..<classes).map { v[(b * classes + $0) * spatial + px] })
                }
            }
            return rows
        }
        return [v]
    }

    /// Best beats second best by more than 0 and by clearMargin population standard deviations.
    public static func isClear(_ v: [Float]) -> Bool {
        if v.count < 2 { return false }
        var best = -Double.infinity, second = -Double.infinity, sum = 0.0
        for x in v {
            let d = Double(x)
            sum += d
            if d > best { second = best; best = d } else if d > second { second = d }
        }
        let mean = sum / Double(v.count)
        let sq = v.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) }
        let margin = best - second
        return margin > 0 && margin >= clearMargin * (sq / Double(v.count)).squareRoot()
    }

    /// First index of the maximum, like numpy.argmax.
    public static func argmax(_ v: [Float]) -> Int {
        var best = 0
        for i in 1..<max(1, v.count) where v[i] > v[best] { best = i }
        return best
    }
}
