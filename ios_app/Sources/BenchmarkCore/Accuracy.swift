import Foundation

/// Agreement with the fp32 reference: mpk's ONE definition of each number, ported from packager/verify.py
/// `compute_metrics` (the reference; the Kotlin twin is compared with it number by number in mpk's CI):
/// - cosine: the MEAN over samples of each sample's cosine between artifact and fp32 outputs, all outputs of one
///   sample concatenated and flattened. Both vectors all zero: 1; only one zero: 0.
///   Example: samples ([1, 0] vs [1, 0]) and ([0, 1] vs [1, 0]) -> (1 + 0) / 2 = 0.5.
/// - snr_db: 10 log10(sum ref^2 / sum (p - ref)^2) over all samples; an exact match is 200, and never more.
/// - max_abs_error: the largest |p - ref|.
/// - top1_agreement: argmax of the FIRST output per sample, for classification (or (1, C) logits when no task).
public enum Accuracy {
    public static let perfectSnrDb = 200.0

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
        let snr = noise == 0 ? perfectSnrDb : min(perfectSnrDb, 10 * log10(max(refEnergy, 1e-30) / noise))
        let logits = firstOutputShape.count == 2 && firstOutputShape[0] == 1 && firstOutputShape[1] > 1
        var top1: Any = NSNull()
        if task == "classification" || (task == nil && logits) {
            let agree = zip(pred, ref).filter { argmax($0.0[0]) == argmax($0.1[0]) }.count
            top1 = Double(agree) / Double(ref.count)
        }
        return [
            ResultKeys.Accuracy.samples: ref.count,
            ResultKeys.Accuracy.maxAbsError: maxAbs,
            ResultKeys.Accuracy.cosine: cosineSum / Double(ref.count),
            ResultKeys.Accuracy.snrDb: snr,
            ResultKeys.Accuracy.top1Agreement: top1,
        ]
    }

    /// First index of the maximum, like numpy.argmax.
    public static func argmax(_ v: [Float]) -> Int {
        var best = 0
        for i in 1..<max(1, v.count) where v[i] > v[best] { best = i }
        return best
    }
}
