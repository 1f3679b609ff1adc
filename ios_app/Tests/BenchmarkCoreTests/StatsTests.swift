import XCTest
@testable import BenchmarkCore

/// `swift test` on a Mac or Linux. mpk's pytest suite cross-checks the Kotlin twin of this code against
/// runners/stats.py and packager/verify.py; these pin the same definitions with worked examples.
final class StatsTests: XCTestCase {
    func testLinearPercentilesMatchNumpy() throws {
        let s = try LatencyStats(samplesMs: [4, 1, 3, 2])
        XCTAssertEqual(s.p90Ms, 3.7, accuracy: 1e-12)  // numpy.quantile([1,2,3,4], 0.9)
        XCTAssertEqual(s.p50Ms, 2.5, accuracy: 1e-12)
    }

    func testSmallSampleCiIsWide() throws {
        XCTAssertEqual(try LatencyStats(samplesMs: [10, 11, 12]).p50CiMs, [10, 12])
    }

    func testPerfectMatchIs200Db() {
        let r: [[[Float]]] = [[[1, 2, 3]]]
        let m = Accuracy.metrics(pred: r, ref: r, task: "classification", firstOutputShape: [1, 3])
        XCTAssertEqual(m[ResultKeys.Accuracy.snrDb] as? Double, 200)
        XCTAssertEqual(m[ResultKeys.Accuracy.top1Agreement] as? Double, 1)
    }

    func testCosineIsTheMeanOfPerSampleCosines() {
        // packager/verify.py compute_metrics: ([1,0] vs [1,0]) -> 1, ([0,1] vs [1,0]) -> 0, mean 0.5;
        // a sample where both are all zero counts 1, where only one is zero counts 0.
        let m = Accuracy.metrics(pred: [[[1, 0]], [[0, 1]]], ref: [[[1, 0]], [[1, 0]]], task: nil, firstOutputShape: [2])
        XCTAssertEqual(m[ResultKeys.Accuracy.cosine] as? Double ?? -1, 0.5, accuracy: 1e-12)
        let z = Accuracy.metrics(pred: [[[0, 0]], [[0, 0]]], ref: [[[0, 0]], [[1, 0]]], task: nil, firstOutputShape: [2])
        XCTAssertEqual(z[ResultKeys.Accuracy.cosine] as? Double ?? -1, 0.5, accuracy: 1e-12)
    }

    func testCompatRefusesAnOlderExecuTorch() {
        let need = Spec.RuntimeRequirement(runtime: "executorch", minVersion: "1.4.0", fileIdentifier: "ET12", specVersion: nil)
        XCTAssertNotNil(Compat.refusal(need, linked: ["executorch": "1.3.1"]))
        XCTAssertNil(Compat.refusal(need, linked: ["executorch": RuntimeVersions.executorch]))
        let coreml = Spec.RuntimeRequirement(runtime: "coreml", minVersion: "17.0", fileIdentifier: nil, specVersion: 8)
        XCTAssertNotNil(Compat.refusal(coreml, linked: ["coreml": "ios 16.7"]))
        XCTAssertNil(Compat.refusal(coreml, linked: ["coreml": "ios 17.4"]))
    }
}
