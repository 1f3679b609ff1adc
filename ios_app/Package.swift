// swift-tools-version:5.9
// mpk's iOS benchmark app. BenchmarkCore is platform-independent (spec/result, stats, accuracy) and is built
// and tested with `swift build` / `swift test` on any Mac; MpkBenchApp holds the app sources, which an Xcode
// iOS App target compiles and signs (see README.md).
import PackageDescription

let package = Package(
    name: "MpkBench",
    platforms: [.iOS(.v16), .macOS(.v13)],
    products: [
        .library(name: "BenchmarkCore", targets: ["BenchmarkCore"]),
        .library(name: "MpkBenchApp", targets: ["MpkBenchApp"]),
    ],
    dependencies: [
        // ExecuTorch publishes SwiftPM snapshots as branches named swiftpm-<version>; 1.3.1 is the newest
        // verified when this was written (mpk's Python side uses executorch 1.4.1; see README.md).
        .package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.3.1"),
    ],
    targets: [
        .target(name: "BenchmarkCore", path: "Sources/BenchmarkCore"),
        .target(
            name: "MpkBenchApp",
            dependencies: [
                "BenchmarkCore",
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "backend_coreml", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
                .product(name: "kernels_quantized", package: "executorch"),
            ],
            path: "Sources/MpkBenchApp",
            linkerSettings: [.linkedFramework("CoreML")]
        ),
        .testTarget(name: "BenchmarkCoreTests", dependencies: ["BenchmarkCore"], path: "Tests/BenchmarkCoreTests"),
    ]
)
