import DataPlane
import Foundation

/// The namespaces of tools/testbed/testbed.sh, brought up with a per-run prefix and always
/// taken down again (`down()` in a `defer`; `tools/testbed/down-all` catches crashes).
public final class Testbed: @unchecked Sendable {
    public enum Host: String, Sendable { case lan, gw, vps, origin }

    public struct Rates: Sendable {
        public var wifi: String
        public var eth: String
        public var cell: String
        public init(wifi: String = "40mbit", eth: String = "30mbit", cell: String = "20mbit") {
            self.wifi = wifi
            self.eth = eth
            self.cell = cell
        }
    }

    public let prefix: String
    private var isUp = true

    /// Addresses in the testbed (see testbed.sh).
    public static let serverAddress = "10.9.9.9"
    public static let gatewayLANAddress = "10.10.0.1"
    public static let originAddress = "10.20.0.2"
    public static let pathAddresses = ["wifi": "10.1.1.1", "eth": "10.1.2.1", "cell": "10.1.3.1"]
    /// IPv6 beside them: the server over wifi only, the LAN and origin sides.
    public static let serverAddress6 = "fd00:9::9"
    public static let gatewayLANAddress6 = "fd00:10::1"
    public static let lanAddress6 = "fd00:10::2"
    public static let originAddress6 = "fd00:20::2"

    public static var script: String {
        repositoryRoot + "/tools/testbed/testbed.sh"
    }

    public static var repositoryRoot: String {
        // Sources/TestSupport/Testbed.swift → repository root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// - Parameter ipv6Path: give wifi IPv6 addresses too, over which gw reaches the server's
    ///   IPv6 address (off by default: a path manager would take it as a fourth endpoint).
    /// - Parameter delays: one-way delay in milliseconds per path ("wifi", "eth", "cell"), at both
    ///   ends (round trip: twice it); none by default.
    public init(rates: Rates = Rates(), endpoints: Bool = true, ipv6Path: Bool = false, delays: [String: Int] = [:]) throws {
        let prefix = "mpx" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var environment = [
            "RATE_WIFI": rates.wifi, "RATE_ETH": rates.eth, "RATE_CELL": rates.cell,
            "ENDPOINTS": endpoints ? "all" : "none", "IPV6_PATH": ipv6Path ? "1" : "0",
        ]
        for (path, milliseconds) in delays { environment["DELAY_\(path.uppercased())"] = "\(milliseconds)" }
        try Testbed.run([Testbed.script, "up", prefix], environment: environment)
        self.prefix = prefix
    }

    public func namespace(_ host: Host) -> NetworkNamespace {
        NetworkNamespace("\(prefix)-\(host.rawValue)")
    }

    /// Runs a command inside a host's namespace and returns its standard output.
    @discardableResult
    public func exec(_ host: Host, _ arguments: [String]) throws -> String {
        try Testbed.run(["ip", "netns", "exec", "\(prefix)-\(host.rawValue)"] + arguments)
    }

    /// An impairment on one path, now: `.delay(ms)` one way, `.loss(percent)` one way at each
    /// end, `.blackhole(Bool)` (link up, everything dropped), `.rate("10mbit")`.
    public enum Impairment: Sendable {
        case delay(Int)
        case loss(Int)
        case blackhole(Bool)
        case rate(String)
    }

    public func impair(_ path: String, _ impairment: Impairment) throws {
        let (kind, value): (String, String)
        switch impairment {
        case .delay(let ms): (kind, value) = ("delay", "\(ms)")
        case .loss(let percent): (kind, value) = ("loss", "\(percent)")
        case .blackhole(let on): (kind, value) = ("blackhole", on ? "on" : "off")
        case .rate(let rate): (kind, value) = ("rate", rate)
        }
        try Testbed.run([Testbed.script, "impair", prefix, path, kind, value])
    }

    public func down() {
        guard isUp else { return }
        isUp = false
        _ = try? Testbed.run([Testbed.script, "down", prefix])
    }

    deinit { down() }

    public struct CommandError: Error, CustomStringConvertible {
        public var description: String
    }

    @discardableResult
    public static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, new in new }
        env["PATH"] = (env["PATH"] ?? "") + ":/usr/sbin:/sbin"
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandError(description: "\(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(String(decoding: errors, as: UTF8.self))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}

/// Whether kernel tests can run here. They need root, network namespaces and MPTCP; where
/// those are missing they skip with the reason, except in CI (CI=true), where they must run.
public enum KernelTestGate {
    public static var unavailableReason: String? {
        if geteuid() != 0 { return "not root: network namespace tests need CAP_NET_ADMIN" }
        if !FileManager.default.fileExists(atPath: "/proc/sys/net/mptcp/enabled") { return "kernel has no MPTCP (/proc/sys/net/mptcp missing)" }
        if (try? Testbed.run(["ip", "-V"])) == nil { return "iproute2 (`ip`) is not installed" }
        if (try? Testbed.run(["tc", "-V"])) == nil { return "`tc` is not installed" }
        return nil
    }

    public static var mustRun: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Whether kernel tests run: yes when possible, and always in CI (where a missing
    /// capability must fail them); otherwise they skip and the reason is printed loudly.
    public static let enabled: Bool = {
        guard let reason = unavailableReason else { return true }
        if mustRun {
            print("CI=true: running kernel tests although \(reason); they will fail")
            return true
        }
        print("⚠️  SKIPPING kernel tests: \(reason)")
        return false
    }()
}
