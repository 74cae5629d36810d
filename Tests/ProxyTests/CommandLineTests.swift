import ConvertProtocol
import DataPlane
import Foundation
import Glibc
import TestSupport
import Testing

/// The real `mptcp-proxy` binary: what only its wiring does (signals, the pid file, the reload
/// command, option checks).
@Suite("mptcp-proxy on the command line", .serialized)
struct CommandLineTests {
    static let binary = Testbed.repositoryRoot + "/.build/debug/mptcp-proxy"

    func write(_ path: String, _ text: String, mode: mode_t = 0o600) {
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        chmod(path, mode)
    }

    @Test("SIGHUP through `mptcp-proxy reload`: a revoked key is refused at once; a broken file is refused and the old one keeps serving")
    func reloadThroughThePidFile() throws {
        let directory = "/tmp/mptcp-proxy-cli-\(getpid())"
        mkdir(directory, 0o700)
        defer { _ = try? Testbed.run(["rm", "-rf", directory]) }
        let keyA = ClientKey(id: "gw-a", secret: Array(repeating: 1, count: 32))
        let keyB = ClientKey(id: "gw-b", secret: Array(repeating: 2, count: 32))
        let line = { (id: String, byte: UInt8) in "\(id) " + String(repeating: String(format: "%02x", byte), count: 32) }
        write("\(directory)/keys", line("gw-a", 1) + "\n" + line("gw-b", 2) + "\n")
        let port = UInt16(20_000 + getpid() % 20_000)
        let config = "listen = \"127.0.0.1:\(port)\"\nkeys = \"keys\"\nloops = 1\n"
        write("\(directory)/server.toml", config)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["server", "--config", "\(directory)/server.toml", "--pid-file", "\(directory)/server.pid", "--log-level", "notice"]
        let log = Foundation.Pipe()
        process.standardError = log
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let server = SocketAddress(.v4([127, 0, 0, 1]), port: port)
        #expect(waitFor { FileManager.default.fileExists(atPath: "\(directory)/server.pid") })
        func code(_ key: ClientKey) throws -> ConvertErrorCode? { try refusalCode(from: server, key: key) }
        #expect(waitFor { (try? code(keyB)) == .notAuthorized })   // known key: refused only by the rule on 127.0.0.1
        // The log line is written by the logging thread, possibly after the reply went out.
        #expect(waitFor { (try? readLog(log).contains("refused by rule")) == true })

        write("\(directory)/keys", line("gw-a", 1) + "\n")
        try Testbed.run([Self.binary, "reload", "--pid-file", "\(directory)/server.pid"])
        #expect(waitFor { (try? readLogText(log, accumulate: true).contains("reloaded: 1 key(s)")) == true })
        #expect(try code(keyB) == .notAuthorized)
        #expect(waitFor { (try? readLogText(log, accumulate: true).contains("unknown key id \"gw-b\"")) == true })
        #expect(try code(keyA) == .notAuthorized)   // gw-a still served (refused only by the rule)

        write("\(directory)/server.toml", config + "max-connections = 0\n")
        try Testbed.run([Self.binary, "reload", "--pid-file", "\(directory)/server.pid"])
        #expect(waitFor { (try? readLogText(log, accumulate: true).contains("reload refused, the running configuration stays: \(directory)/server.toml:4: max-connections: 0 is outside")) == true })
        #expect(process.isRunning)
        #expect(try code(keyA) == .notAuthorized)
    }

    @Test("once listening, the server hands back start-up's code pages (resident set lower, by the kernel's count) and still serves")
    func startupPagesAreHandedBack() throws {
        let directory = "/tmp/mptcp-proxy-pages-\(getpid())"
        mkdir(directory, 0o700)
        defer { _ = try? Testbed.run(["rm", "-rf", directory]) }
        let key = ClientKey(id: "gw", secret: Array(repeating: 3, count: 32))
        write("\(directory)/keys", "gw " + String(repeating: "03", count: 32) + "\n")
        let port = UInt16(20_000 + (getpid() + 7) % 20_000)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["server", "--listen", "127.0.0.1:\(port)", "--keys", "\(directory)/keys", "--loops", "1", "--log-level", "debug"]
        let log = Foundation.Pipe()
        process.standardError = log
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let pattern = "handed back start-up's code pages: resident "
        #expect(waitFor { (try? readLog(log).contains(pattern)) == true })
        let logged = try readLog(log)
        // "resident B KB, now A KB": what the process counted around its madvise.
        let figures = logged.components(separatedBy: pattern).last?.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) } ?? []
        try #require(figures.count == 2, "\(logged)")
        let (before, after) = (figures[0], figures[1])
        #expect(before - after >= 1024, "resident \(before) KB before, \(after) KB after")
        // The kernel's own count, read from outside the process, agrees.
        let status = try String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        let resident = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? Int.max
        #expect(resident < before, "VmRSS \(resident) KB, \(before) KB before the hand-back")
        // The code dropped runs again: a whole handshake, refused by the rule on 127.0.0.1.
        #expect(try refusalCode(from: SocketAddress(.v4([127, 0, 0, 1]), port: port), key: key) == .notAuthorized)
        #expect(process.isRunning)
    }

    @Test("`mptcp-proxy pm` logs what about its namespace defeats multipath, with the fix: MPTCP off, strict rp_filter",
          .enabled(if: KernelTestGate.enabled, "needs root and netns"))
    func pathManagerReportsHostProblems() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        try testbed.exec(.gw, ["sysctl", "-qw", "net.mptcp.enabled=0"])
        try testbed.exec(.gw, ["sysctl", "-qw", "net.ipv4.conf.wifi.rp_filter=1"])
        let output = try pmStartLog(testbed)
        #expect(output.contains("host: MPTCP: net.mptcp.enabled is 0"), "\(output)")
        #expect(output.contains("host: rp_filter: strict reverse-path filtering on wifi"), "\(output)")
        #expect(output.contains("fix: sysctl -w net.ipv4.conf.wifi.rp_filter=2"), "\(output)")
    }

    @Test("`mptcp-proxy pm` watches the paths' health only when told --path-health, and says which at start",
          .enabled(if: KernelTestGate.enabled, "needs root and netns"))
    func pathHealthIsOptIn() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        let byDefault = try pmStartLog(testbed)
        #expect(byDefault.contains("path health: off: only link and address changes"), "\(byDefault)")
        let on = try pmStartLog(testbed, "--path-health --path-hold-down 5000")
        #expect(on.contains("path health: on:") && on.contains("is taken out for 5000 ms"), "\(on)")
        #expect(!on.contains("sock_diag could not be opened"), "\(on)")
        #expect(try pmStartLog(testbed, "--path-health --no-path-health").contains("path health: off:"))
    }

    @Test("`mptcp-proxy pm` names each endpoint it finds but did not make, which it leaves alone, and how to hand it over",
          .enabled(if: KernelTestGate.enabled, "needs root and netns"))
    func pathManagerNamesEndpointsItLeavesAlone() throws {
        let testbed = try Testbed()  // with the kernel endpoints of its three uplinks on gw
        defer { testbed.down() }
        let output = try pmStartLog(testbed)
        let endpoints = try testbed.exec(.gw, ["ip", "mptcp", "endpoint", "show"])
        for address in ["10.1.1.1", "10.1.2.1", "10.1.3.1"] {
            #expect(endpoints.contains(address), "testbed endpoints: \(endpoints)")
            #expect(output.contains(" \(address) was not made by this manager, so its path is left alone"), "\(output)")
        }
        #expect(output.contains("--own-all-endpoints replaces it"), "\(output)")
    }

    @Test("options are range-checked like the file: a zero idle timeout is an error, not a relay that ends at once")
    func optionRanges() {
        for (option, value, message) in [("--idle-timeout-ms", "0", "--idle-timeout-ms 0 is outside 1000...86400000"),
                                         ("--handshake-timeout-ms", "5", "--handshake-timeout-ms 5 is outside 100...600000"),
                                         ("--drain-timeout-ms", "99999999999", "--drain-timeout-ms 99999999999 is outside"),
                                         ("--loops", "0", "--loops 0 is outside 1...256")] {
            do {
                try Testbed.run([Self.binary, "server", "--listen", "127.0.0.1:1", "--allow-unauthenticated", option, value])
                Issue.record("\(option) \(value) was accepted")
            } catch {
                #expect("\(error)".contains(message), "\(option): \(error)")
            }
        }
    }

    /// What `mptcp-proxy pm` (with `options`) logs in the testbed's gw namespace in its first
    /// 1.5 s, stdout and stderr together; then it is stopped.
    private func pmStartLog(_ testbed: Testbed, _ options: String = "") throws -> String {
        try Testbed.run(["sh", "-c", "timeout -s TERM 1.5 \(Self.binary) pm --netns \(testbed.prefix)-gw --class lan0=other \(options) 2>&1; true"])
    }

    /// The error the server at `server` answers `key`'s signed request for 127.0.0.1:1 with. A
    /// destination the rules refuse is the cheapest exchange that proves the key was accepted.
    private func refusalCode(from server: SocketAddress, key: ClientKey) throws -> ConvertErrorCode? {
        let request = try LoopbackChain.request(to: SocketAddress(.v4([127, 0, 0, 1]), port: 1), key: key)
        return LoopbackChain.errorCode(in: try LoopbackChain.exchange(server, request))
    }

    private let accumulated = Shared("")

    private func readLog(_ pipe: Foundation.Pipe) throws -> String { try readLogText(pipe, accumulate: true) }

    /// What the process has logged so far (non-blocking).
    private func readLogText(_ pipe: Foundation.Pipe, accumulate: Bool) throws -> String {
        let fd = pipe.fileHandleForReading.fileDescriptor
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            let text = String(decoding: buffer[0..<n], as: UTF8.self)
            accumulated.update { $0 += text }
        }
        return accumulated.value
    }

    private func waitFor(_ condition: () -> Bool) -> Bool {
        for _ in 0..<300 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }
}

/// The Debian package's systemd units (tools/package/deb/files), as systemd itself reads them.
@Suite("Package units")
struct PackageUnitTests {
    @Test("systemd-analyze verify finds nothing to say about the three units")
    func unitsVerify() throws {
        guard access("/usr/bin/systemd-analyze", X_OK) == 0 else {
            print("SKIPPED: systemd-analyze not installed (Debian: systemd)")
            return
        }
        let directory = "/tmp/mptcp-proxy-units-\(getpid())"
        _ = try Testbed.run(["mkdir", "-p", directory])
        defer { _ = try? Testbed.run(["rm", "-rf", directory]) }
        let units = ["mptcp-proxy-client.service", "mptcp-proxy-server.service", "mptcp-proxy-pm.service"]
        for unit in units {
            // The binary this test suite built stands in for /usr/bin/mptcp-proxy (verify checks it exists).
            let text = try String(contentsOfFile: Testbed.repositoryRoot + "/tools/package/deb/files/" + unit, encoding: .utf8)
            try text.replacingOccurrences(of: "/usr/bin/mptcp-proxy", with: CommandLineTests.binary)
                .write(toFile: "\(directory)/\(unit)", atomically: true, encoding: .utf8)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/systemd-analyze")
        process.arguments = ["verify"] + units.map { "\(directory)/\($0)" }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0 && text.isEmpty, "systemd-analyze verify:\n\(text)")
    }
}
