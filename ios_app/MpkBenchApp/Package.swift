// swift-tools-version:5.9
// The iOS app's sources: CoreML and ExecuTorch runners, memory, the SwiftUI entry point. An Xcode iOS App target
// links the MpkBenchApp library (README.md). iOS 17: ExecuTorch's Swift package requires it (its Package.swift on
// branch swiftpm-1.4.1 declares .iOS(.v17)).
import PackageDescription

let package = Package(
    name: "MpkBenchApp",
    platforms: [.iOS(.v17)],
    products: [
        .library(name: "MpkBenchApp", targets: ["MpkBenchApp"]),
    ],
    dependencies: [
        .package(name: "MpkBench", path: ".."),
        // ExecuTorch publishes SwiftPM snapshots as branches named swiftpm-<version>. 1.4.1 is the release mpk
        // exports with (pyproject pins executorch 1.4.1); ExecuTorch guarantees no forward compatibility, so the
        // runtime must not be older. Keep BenchmarkCore's RuntimeVersions.executorch equal to it (a test checks).
        .package(url: "https://github.com/pytorch/executorch.git", branch: "swiftpm-1.4.1"),
    ],
    targets: [
        .target(
            name: "MpkBenchApp",
            dependencies: [
                .product(name: "BenchmarkCore", package: "MpkBench"),
                .product(name: "executorch", package: "executorch"),
                .product(name: "backend_xnnpack", package: "executorch"),
                .product(name: "backend_coreml", package: "executorch"),
                .product(name: "kernels_optimized", package: "executorch"),
                .product(name: "kernels_quantized", package: "executorch"),
            ],
            path: "Sources/MpkBenchApp",
            linkerSettings: [.linkedFramework("CoreML")]
        ),
    ]
)
