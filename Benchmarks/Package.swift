// swift-tools-version:6.1
import PackageDescription

// Benchmarks for Tollgate, kept in their own package so that the library does not depend on
// package-benchmark (and its malloc interposer).
//
// - CoreBenchmarks: package-benchmark microbenchmarks (`swift package benchmark`), with checked-in
//   thresholds in Thresholds/.
// - core-compare: a plain executable that mirrors the Guava peer (shared/peers/guava/Keyed.java),
//   driven by compare-core.sh.
// - tollgate-openloop: an open-loop HTTP load generator (fixed rate, latency from each request's due time,
//   full HdrHistogram), driven by openloop-compare.sh and failure-modes.sh.
let package = Package(
    name: "TollgateBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Tollgate", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", exact: "0.2.0"),
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
        .executableTarget(
            name: "tollgate-openloop",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/tollgate-openloop"
        ),
    ],
    swiftLanguageModes: [.v6]
)
