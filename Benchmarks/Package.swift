// swift-tools-version:6.1
import PackageDescription

// Benchmarks for Tollgate, kept in their own package so that the library does not depend on
// package-benchmark (and its malloc interposer).
//
// - CoreBenchmarks: package-benchmark microbenchmarks (`swift package benchmark`), with checked-in
//   thresholds in Thresholds/.
// - core-compare: a plain executable that mirrors the Guava peer (shared/peers/guava/Keyed.java),
//   driven by compare-core.sh.
let package = Package(
    name: "TollgateBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Tollgate", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Tollgate", package: "Tollgate"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
        .executableTarget(
            name: "core-compare",
            dependencies: [
                .product(name: "Tollgate", package: "Tollgate")
            ],
            path: "Sources/core-compare"
        ),
    ],
    swiftLanguageModes: [.v6]
)
