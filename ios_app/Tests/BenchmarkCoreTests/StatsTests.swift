import XCTest
@testable import BenchmarkCore

/// `swift test` on a Mac. The cross-check against runners/stats.py runs in mpk's pytest suite for the Kotlin
/// twin of this code; these pin the same numpy-defined values.
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
}
