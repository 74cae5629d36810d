import ArgumentParser
import DataPlane
import Foundation
import Glibc
import TestSupport

/// Traffic source and sink for the benchmarks and the demo (tools/bench, tools/demo).
/// `sink` serves uploads (discard, then report the count) and downloads (send until the
/// client closes); `load` drives one of them for a fixed time and prints the goodput.
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mptcp-bench",
        abstract: "Throughput source and sink for mptcp-proxy benchmarks.",
        subcommands: [Sink.self, Load.self, Respond.self, SetupLoad.self])
}

struct Sink: ParsableCommand {
    @Option(help: "ADDR:PORT to listen on.") var listen: String
    @Flag(help: "Listen with IPPROTO_MPTCP (plain TCP clients are accepted too).") var mptcp = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let fd = try BlockingSocket.listen(on: try SocketAddress(parsing: listen), mptcp: mptcp)
        while true {
            let conn = accept(fd, nil, nil)
            if conn < 0 { continue }
            _ = OSThread(name: "sink") { serve(conn) }
        }
    }

    func serve(_ fd: Int32) {
        defer { close(fd) }
        guard let mode = try? BlockingSocket.readExactly(fd, 1) else { return }
        var buffer = [UInt8](repeating: 0x5a, count: 1 << 20)
        if mode[0] == UInt8(ascii: "U") {
            // Reply: bytes received, then the longest gap between reads in µs (8 bytes each).
            var total: UInt64 = 0
            var gap: UInt64 = 0
            var last: UInt64 = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                let now = monotonicMicroseconds()
                if last != 0 { gap = max(gap, now - last) }
                last = now
                total += UInt64(n)
            }
            var reply = [total.bigEndian, gap.bigEndian]
            _ = reply.withUnsafeMutableBytes { send(fd, $0.baseAddress, 16, Int32(MSG_NOSIGNAL)) }
        } else {
            while buffer.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) > 0 {}
        }
    }
}

struct Load: ParsableCommand {
    @Option(help: "ADDR:PORT to connect to.") var to: String
    @Option(help: "Seconds to run.") var seconds: Double = 5
    @Option(help: "up (we send) or down (we receive).") var direction: String = "up"
    @Option(help: "Local IP address to bind (pins a path by its source routing table).") var bind: String?
    @Flag(help: "Connect with IPPROTO_MPTCP.") var mptcp = false

    func validate() throws {
        guard direction == "up" || direction == "down" else { throw ValidationError("--direction is up or down") }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        let fd = socket(target.family, Int32(SOCK_STREAM.rawValue), mptcp ? 262 : 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        if let bind {
            guard let ip = IPAddress(parsing: bind) else { throw ValidationError("--bind \(bind) is not an IP address") }
            let any = SocketAddress(ip, port: 0)
            guard any.withSockAddr({ Glibc.bind(fd, $0, $1) }) == 0 else { throw SystemError("bind(\(bind))", errno: errno) }
        }
        guard target.withSockAddr({ connect(fd, $0, $1) }) == 0 else { throw SystemError("connect(\(to))", errno: errno) }
        var buffer = [UInt8](repeating: 0xa5, count: 1 << 20)
        let start = Date()
        var bytes: UInt64 = 0
        var gap: UInt64 = 0
        if direction == "up" {
            _ = send(fd, "U", 1, 0)
            while Date().timeIntervalSince(start) < seconds {
                let n = buffer.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { break }
            }
            shutdown(fd, Int32(SHUT_WR))
            let reply = try BlockingSocket.readExactly(fd, 16)
            bytes = reply[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
            gap = reply[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
        } else {
            _ = send(fd, "D", 1, 0)
            var last: UInt64 = 0
            while Date().timeIntervalSince(start) < seconds {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { throw TrafficError("download ended early after \(bytes) bytes") }
                let now = monotonicMicroseconds()
                if last != 0 { gap = max(gap, now - last) }
                last = now
                bytes += UInt64(n)
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        close(fd)
        // Mbit/s, bytes, seconds, longest gap between reads that returned data (ms).
        print(String(format: "%.2f", Double(bytes) * 8 / elapsed / 1e6), "Mbit/s", bytes, "bytes", String(format: "%.2f", elapsed), "s",
              String(format: "%.0f", Double(gap) / 1000), "ms-gap")
    }
}
