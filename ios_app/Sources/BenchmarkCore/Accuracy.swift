import Foundation

/// Agreement with the fp32 reference, defined exactly like runners/host_runner.py `accuracy_metrics`:
/// all outputs of all samples flattened; cosine capped at 1; SNR in dB with a perfect match reported as 200;
/// top-1 agreement on the first output for classification (or (1, C) logits when no task is given).
public enum Accuracy {
    public static let perfectSnrDb = 200.0

    /// `pred` and `ref` are [sample][output] -> flat values.
    public static func metrics(pred: [[[Float]]], ref: [[[Float]]], task: String?, firstOutputShape: [Int]) -> [String: Any] {
        let p = pred.flatMap { $0.flatMap { $0.map(Double.init) } }
        let r = ref.flatMap { $0.flatMap { $0.map(Double.init) } }
        precondition(p.count == r.count, "output sizes differ from the reference")
        var dot = 0.0, pp = 0.0, rr = 0.0, noise = 0.0, maxAbs = 0.0, anyErr = false
        for i in 0..<p.count {
            let e = p[i] - r[i]
            dot += p[i] * r[i]; pp += p[i] * p[i]; rr += r[i] * r[i]; noise += e * e
            if e != 0 { anyErr = true }
            maxAbs = max(maxAbs, abs(e))
        }
        let denom = pp.squareRoot() * rr.squareRoot()
        let cosine = denom > 0 ? dot / denom : (anyErr ? 0 : 1)
        let snr = noise == 0 ? perfectSnrDb : 10 * log10(max(rr, 1e-30) / noise)
        let logits = firstOutputShape.count == 2 && firstOutputShape[0] == 1 && firstOutputShape[1] > 1
        var top1: Any = NSNull()
        if task == "classification" || (task == nil && logits) {
            let agree = zip(pred, ref).filter { argmax($0.0[0]) == argmax($0.1[0]) }.count
            top1 = Double(agree) / Double(ref.count)
        }
        return [
            ResultKeys.Accuracy.samples: ref.count,
            ResultKeys.Accuracy.maxAbsError: maxAbs,
            ResultKeys.Accuracy.cosine: min(1.0, cosine),
            ResultKeys.Accuracy.snrDb: min(snr, perfectSnrDb),
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
