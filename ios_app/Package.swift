// swift-tools-version:5.9
// mpk's iOS benchmark app, platform-independent half: BenchmarkCore (spec/result, stats, accuracy, the measuring
// order, the runtime-version check) has no dependencies and builds and tests with `swift build` / `swift test` on
// any Mac, or on Linux with a Swift toolchain. The app itself (CoreML, ExecuTorch, UIKit) is the package in
// MpkBenchApp/, which depends on this one (see README.md).
import PackageDescription

let package = Package(
    name: "MpkBench",
    platforms: [.iOS(.v17), .macOS(.v13)],
    products: [
        .library(name: "BenchmarkCore", targets: ["BenchmarkCore"]),
    ],
    targets: [
        .target(name: "BenchmarkCore", path: "Sources/BenchmarkCore"),
        .testTarget(name: "BenchmarkCoreTests", dependencies: ["BenchmarkCore"], path: "Tests/BenchmarkCoreTests"),
    ]
)
