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
        subcommands: [Sink.self, Load.self, Respond.self, SetupLoad.self, HashOrigin.self, Many.self, Churn.self, Hold.self, Open.self, Stream.self])
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
        if mode[0] == UInt8(ascii: "T") {
            serveTimedUpload(fd, &buffer)
        } else if mode[0] == UInt8(ascii: "P") {
            servePatternStream(fd)
        } else if mode[0] == UInt8(ascii: "U") {
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

extension Sink {
    /// A timed upload ("T", then the window in ms, 4 bytes big-endian): counts what arrives
    /// from the first byte for the window, then answers bytes, the window's actual µs and the
    /// longest gap between reads (8 bytes each) while the sender is still sending, and drains
    /// until EOF. The goodput is the receiver's, and no half-close is needed, which
    /// shadowsocks' ss-tunnel does not relay (it closes both ways on the client's EOF).
    func serveTimedUpload(_ fd: Int32, _ buffer: inout [UInt8]) {
        guard let header = try? BlockingSocket.readExactly(fd, 4) else { return }
        let window = UInt64(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }) * 1000
        var total: UInt64 = 0, gap: UInt64 = 0, first: UInt64 = 0, last: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            let now = monotonicMicroseconds()
            if first == 0 { first = now } else { gap = max(gap, now - last) }
            last = now
            total += UInt64(n)
            if now - first >= window { break }
        }
        var reply = [total.bigEndian, (last - first).bigEndian, gap.bigEndian]
        _ = reply.withUnsafeMutableBytes { send(fd, $0.baseAddress, 24, Int32(MSG_NOSIGNAL)) }
        while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
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
        var elapsed = 0.0
        if direction == "up" {
            // Timed at the receiver (Sink.serveTimedUpload): send until its report arrives.
            let window = UInt32(clamping: Int((seconds * 1000).rounded()))
            var header: [UInt8] = [UInt8(ascii: "T"), UInt8(window >> 24), UInt8(window >> 16 & 0xff), UInt8(window >> 8 & 0xff), UInt8(window & 0xff)]
            guard send(fd, &header, header.count, Int32(MSG_NOSIGNAL)) == header.count else { throw SystemError("send", errno: errno) }
            var ready = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
            while true {
                guard poll(&ready, 1, 30_000) > 0 else { throw TrafficError("no report from the sink within 30 s") }
                if ready.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { break }
                let n = buffer.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                if n < 0 && errno != EAGAIN { throw SystemError("send", errno: errno) }
            }
            let reply = try BlockingSocket.readExactly(fd, 24)
            func field(_ i: Int) -> UInt64 { reply[i * 8 ..< i * 8 + 8].reduce(0) { $0 << 8 | UInt64($1) } }
            bytes = field(0)
            elapsed = max(Double(field(1)) / 1e6, 1e-6)
            gap = field(2)
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
        if direction == "down" { elapsed = Date().timeIntervalSince(start) }
        close(fd)
        // Mbit/s, bytes, seconds, longest gap between reads that returned data (ms).
        print(String(format: "%.2f", Double(bytes) * 8 / elapsed / 1e6), "Mbit/s", bytes, "bytes", String(format: "%.2f", elapsed), "s",
              String(format: "%.0f", Double(gap) / 1000), "ms-gap")
    }
}
