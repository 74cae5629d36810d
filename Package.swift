// swift-tools-version:6.0
// mptcp-proxy: a Multipath TCP aggregating proxy for Linux.
// Module map: docs/architecture.md.
import PackageDescription

/// Release builds of the modules on a connection's path skip run-time exclusivity checks: they
/// were 11% of the server's instructions per connection (docs/decisions/0008). Debug builds,
/// which the tests run, keep them, and the compile-time checks stay on everywhere.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "mptcp-proxy",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mptcp-proxy", targets: ["MPTCPProxyCLI"]),
        .executable(name: "mptcp-stats", targets: ["StatsCLI"]),
        .executable(name: "mptcp-bench", targets: ["BenchTool"]),
        .executable(name: "fuzz-convert", targets: ["ConvertFuzzTarget"]),
        .executable(name: "fuzz-proxy-protocols", targets: ["ProxyProtocolsFuzzTarget"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C: kernel definitions newer than the installed headers, and (later) libmnl netlink.
        .target(name: "CMPTCPNetlink", path: "netlink", linkerSettings: [.linkedLibrary("mnl")]),
        // C: Linux calls and constants Swift's Glibc module hides (splice, setns, ...).
        .target(name: "CLinuxShim"),
        // Addresses, networks, destinations and peer-text escaping: the vocabulary every module shares. Pure.
        .target(name: "NetworkTypes", swiftSettings: hotPath),
        // RFC 8803 Convert messages and the authentication cookie. Pure, no I/O.
        .target(name: "ConvertProtocol", dependencies: [
            "NetworkTypes",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "HeapModule", package: "swift-collections"),
        ], swiftSettings: hotPath),
        // epoll event loops, timers, sockets, and the splice relay.
        .target(name: "DataPlane", dependencies: ["CLinuxShim", "NetworkTypes", .product(name: "HeapModule", package: "swift-collections")],
                swiftSettings: hotPath),
        // The Swift face of kernel MPTCP: socket options, fallback detection.
        .target(name: "MPTCPKernel", dependencies: ["CMPTCPNetlink", "DataPlane"], swiftSettings: hotPath),
        // Interface classification, the path policy and path health (pure), plus the service that runs them.
        .target(name: "PathManager", dependencies: [
            "MPTCPKernel", "DataPlane",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // Structure-aware generators and invariant harnesses shared by the test suite's fuzzers
        // and the coverage-guided targets in tools/fuzz.
        .target(name: "Fuzzing", dependencies: ["ConvertProtocol", "NetworkTypes", "ProxyProtocols", .product(name: "Crypto", package: "swift-crypto")]),
        // SOCKS5, HTTP CONNECT and PROXY protocol v2 codecs. Pure, no I/O.
        .target(name: "ProxyProtocols", dependencies: ["NetworkTypes"]),
        // Client and server connections, policies (rules, limits, pools), configuration, services, metrics.
        .target(name: "Proxy", dependencies: [
            "ConvertProtocol", "DataPlane", "MPTCPKernel", "ProxyProtocols",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], swiftSettings: hotPath),
        // mptcp-stats: sampling (sock_diag, PM), rates, and the terminal view.
        .target(name: "Stats", dependencies: ["MPTCPKernel", "PathManager", "DataPlane"]),
        // Thin executable: argument parsing and wiring only.
        .executableTarget(name: "MPTCPProxyCLI", dependencies: [
            "Proxy", "PathManager",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "StatsCLI", dependencies: [
            "Stats", "PathManager", "DataPlane",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Helpers shared by the end-to-end tests and the benchmarks: testbed, traffic, checksums.
        .target(name: "TestSupport", dependencies: [
            "DataPlane", "MPTCPKernel", "ProxyProtocols",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "BenchTool", dependencies: [
            "TestSupport", "Proxy", "DataPlane", "MPTCPKernel",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "tools/bench/BenchTool"),
        // Coverage-guided fuzz target (libFuzzer with -DFUZZING; a corpus replayer otherwise): tools/fuzz.
        .executableTarget(name: "ConvertFuzzTarget", dependencies: ["ConvertProtocol", "Fuzzing"], path: "tools/fuzz/ConvertFuzzTarget"),
        .executableTarget(name: "ProxyProtocolsFuzzTarget", dependencies: ["Fuzzing"], path: "tools/fuzz/ProxyProtocolsFuzzTarget"),
        .testTarget(name: "ConvertProtocolTests", dependencies: ["ConvertProtocol", "NetworkTypes", "Fuzzing", "TestSupport"]),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "ConvertProtocol", "DataPlane", "ProxyProtocols", "TestSupport", "Fuzzing"]),
        .testTarget(name: "PathManagerTests", dependencies: ["PathManager", "MPTCPKernel", "TestSupport", "DataPlane"]),
        .testTarget(name: "StatsTests", dependencies: ["Stats", "MPTCPKernel", "DataPlane", "TestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "EndToEndTests", dependencies: [
            "PathManager", "Stats",
            "Proxy", "TestSupport", "DataPlane", "MPTCPKernel", "ConvertProtocol",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
