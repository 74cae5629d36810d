import ArgumentParser
import DataPlane
import Foundation
import Glibc
import TestSupport

/// B4's transfer: a pattern stream in one direction for a fixed window, every byte checked at
/// the receiver and its arrivals counted in 10 ms bins, while failures are injected at set
/// instants (`--at 2=CMD`). The instants are taken on the monotonic clock, which every
/// namespace shares, so the sink's bins of an upload line up with them.
///
/// One JSON line: bytes, whether every byte matched the pattern, whether the connection
/// survived the window, the longest gap between reads, the outage (time after the first event
/// in 100 ms windows below `--outage-below` Mbit/s), and the mean rate after the first event.
struct Stream: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A checked, timed pattern stream with failures injected mid-run (B4).")
    @Option(help: "ADDR:PORT of an mptcp-bench sink (directly or through a relay).") var to: String
    @Option(help: "down (the sink sends) or up (we send).") var direction: String = "down"
    @Option(help: "Seconds the receiver counts.") var seconds: Double = 6
    @Flag(help: "Connect with IPPROTO_MPTCP.") var mptcp = false
    @Option(name: .customLong("at"), help: "SECONDS=SHELL-COMMAND, run at that offset from the first byte received (repeatable).")
    var events: [String] = []
    @Option(help: "Mbit/s below which a 100 ms window counts as outage (half the surviving paths' rate).")
    var outageBelow: Double = 25
    @Flag(help: "Also print each 10 ms bin from 200 ms before the first event to 1.5 s after it (on stderr).")
    var timeline = false

    func validate() throws {
        guard direction == "up" || direction == "down" else { throw ValidationError("--direction is up or down") }
        for event in events where Double(event.split(separator: "=", maxSplits: 1).first ?? "") == nil {
            throw ValidationError("--at \(event): expected SECONDS=COMMAND")
        }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        let fd = socket(target.family, Int32(SOCK_STREAM.rawValue), mptcp ? 262 : 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        defer { close(fd) }
        guard target.withSockAddr({ connect(fd, $0, $1) }) == 0 else { throw SystemError("connect(\(to))", errno: errno) }
        let seed = UInt64.random(in: 1...UInt64.max)
        let windowMs = UInt32(clamping: Int((seconds * 1000).rounded()))
        var header: [UInt8] = [UInt8(ascii: "P"), UInt8(ascii: direction == "down" ? "d" : "u")]
        withUnsafeBytes(of: seed.bigEndian) { header += $0 }
        withUnsafeBytes(of: windowMs.bigEndian) { header += $0 }
        try header.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }

        let injector = EventInjector(events)
        let report: ArrivalReport
        if direction == "down" {
            var receiver = PatternReceiver(seed: seed, windowMicros: UInt64(windowMs) * 1000)
            receiver.onFirstByte = { injector.start(at: $0) }
            report = receiver.receive(fd)
        } else {
            report = try sendUntilReport(fd, seed: seed, injector: injector)
        }
        injector.join()
        if timeline { printTimeline(report, events: injector.instants) }
        print(summary(report, events: injector.instants))
    }

    /// Sends the pattern until the sink's report arrives (it counts the window from its first
    /// byte, which left here at the start: the events are timed from then).
    func sendUntilReport(_ fd: Int32, seed: UInt64, injector: EventInjector) throws -> ArrivalReport {
        var stream = PatternStream(seed: seed)
        var chunk = [UInt8](repeating: 0, count: PatternReceiver.chunk)
        var offset = chunk.count
        var ready = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
        injector.start(at: monotonicMicroseconds())
        var reply: [UInt8] = []
        while true {
            guard poll(&ready, 1, 30_000) > 0 else { return .lost("no report from the sink within 30 s") }
            if ready.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                var buffer = [UInt8](repeating: 0, count: 65536)
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return .lost("the connection ended before the sink's report (\(n < 0 ? String(cString: strerror(errno)) : "EOF"))") }
                reply += buffer[0..<n]
                if let newline = reply.firstIndex(of: UInt8(ascii: "\n")) {
                    return try JSONDecoder().decode(ArrivalReport.self, from: Data(reply[..<newline]))
                }
                continue
            }
            if offset == chunk.count {
                chunk.withUnsafeMutableBytes { stream.fill($0) }
                offset = 0
            }
            let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 && errno != EAGAIN { return .lost("send: \(String(cString: strerror(errno)))") }
            if n > 0 { offset += n }
        }
    }

    func summary(_ report: ArrivalReport, events: [UInt64]) -> String {
        let firstEvent = events.first.map(report.bin)
        // Outage: 100 ms windows (ten bins) from the first event to the end whose rate is below
        // the threshold; partial windows at the end are left out.
        var outageMs = 0
        var afterBytes: UInt64 = 0
        var afterBins = 0
        if let from = firstEvent, from < report.bins.count {
            let threshold = outageBelow * 1e6 / 8 * 0.1
            var start = from
            while start + 10 <= report.bins.count {
                let bytes = report.bins[start..<start + 10].reduce(0, +)
                if Double(bytes) < threshold { outageMs += 100 }
                start += 10
            }
            afterBytes = report.bins[from...].reduce(0, +)
            afterBins = report.bins.count - from
        }
        var fields: [String] = [
            "\"mbps\":\(format(ArrivalReport.mbps(report.bytes, bins: report.bins.count)))",
            "\"bytes\":\(report.bytes)",
            "\"verified\":\(report.verified)",
            "\"lost\":\(report.lost != nil)",
            "\"gap_ms\":\(format(Double(report.gapMicros) / 1000))",
            "\"outage_ms\":\(outageMs)",
            "\"after_mbps\":\(format(ArrivalReport.mbps(afterBytes, bins: afterBins)))",
            "\"events_ms\":[\(events.map { String(report.offset($0) / 1000) }.joined(separator: ","))]",
        ]
        if let lost = report.lost { fields.append("\"error\":\"\(lost.replacingOccurrences(of: "\"", with: "'"))\"") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    func printTimeline(_ report: ArrivalReport, events: [UInt64]) {
        guard let event = events.first, event > report.firstByte else { return }
        let cut = report.bin(event)
        for bin in max(0, cut - 20)..<min(report.bins.count, cut + 150) {
            let mbps = ArrivalReport.mbps(report.bins[bin], bins: 1)
            FileHandle.standardError.write("\((bin - cut) * 10) ms \(format(mbps))\n".data(using: .utf8)!)
        }
    }

    func format(_ value: Double) -> String { String(format: "%.1f", value) }
}

/// What a receiver saw: bytes, whether each matched the pattern, the longest gap between
/// reads, and the bytes of each 10 ms bin from its first byte.
struct ArrivalReport: Codable {
    static let binMicros = 10_000
    var bytes: UInt64 = 0
    var verified = true
    var lost: String?
    var firstByte: UInt64 = 0
    var gapMicros: UInt64 = 0
    var bins: [UInt64] = []

    /// Microseconds from the first byte to `instant` (0 for an instant before it).
    func offset(_ instant: UInt64) -> UInt64 { instant > firstByte ? instant - firstByte : 0 }

    /// The bin `instant` falls in.
    func bin(_ instant: UInt64) -> Int { Int(offset(instant) / UInt64(Self.binMicros)) }

    /// The rate of `bytes` over `bins` bins.
    static func mbps(_ bytes: UInt64, bins: Int) -> Double {
        bins > 0 ? Double(bytes) * 8 / (Double(bins) * Double(binMicros) / 1e6) / 1e6 : 0
    }

    static func lost(_ why: String) -> ArrivalReport {
        var report = ArrivalReport()
        report.lost = why
        report.verified = false
        return report
    }
}

/// Receives a pattern stream for a window counted from its first byte, checking every byte.
/// The sender fills whole chunks of `chunk` bytes (a multiple of the pattern's 8-byte word),
/// so the receiver regenerates the same chunks whatever sizes its reads return.
struct PatternReceiver {
    static let chunk = 64 * 1024
    private var stream: PatternStream
    private var expected = [UInt8](repeating: 0, count: chunk)
    private var position = chunk
    let windowMicros: UInt64
    var onFirstByte: (UInt64) -> Void = { _ in }

    init(seed: UInt64, windowMicros: UInt64) {
        stream = PatternStream(seed: seed)
        self.windowMicros = windowMicros
    }

    mutating func receive(_ fd: Int32) -> ArrivalReport {
        var report = ArrivalReport()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var last: UInt64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            let now = monotonicMicroseconds()
            if n <= 0 {
                report.lost = n < 0 ? "recv: \(String(cString: strerror(errno)))" : "EOF after \(report.bytes) bytes"
                return report
            }
            if report.firstByte == 0 {
                report.firstByte = now
                onFirstByte(now)
            } else {
                report.gapMicros = max(report.gapMicros, now - last)
            }
            last = now
            if report.verified, !buffer.withUnsafeBytes({ check(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }) {
                report.verified = false
            }
            report.bytes += UInt64(n)
            let bin = report.bin(now)
            if report.bins.count <= bin { report.bins += repeatElement(0, count: bin + 1 - report.bins.count) }
            report.bins[bin] += UInt64(n)
            if now - report.firstByte >= windowMicros { return report }
        }
    }

    /// Compares received bytes with the next bytes of the pattern.
    private mutating func check(_ received: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index < received.count {
            if position == expected.count {
                expected.withUnsafeMutableBytes { stream.fill($0) }
                position = 0
            }
            let n = min(received.count - index, expected.count - position)
            let equal = expected.withUnsafeBytes { memcmp($0.baseAddress! + position, received.baseAddress! + index, n) == 0 }
            guard equal else { return false }
            position += n
            index += n
        }
        return true
    }
}

/// Runs shell commands at offsets from a start instant, on a thread of its own, and records
/// the monotonic instant each one began.
final class EventInjector: @unchecked Sendable {
    private let schedule: [(offset: Double, command: String)]
    private var thread: OSThread?
    private let lock = NSLock()
    private var started: [UInt64] = []

    init(_ events: [String]) {
        schedule = events.compactMap { event in
            let parts = event.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let offset = Double(parts[0]) else { return nil }
            return (offset, String(parts[1]))
        }.sorted { $0.offset < $1.offset }
    }

    var instants: [UInt64] { lock.withLock { started } }

    func start(at origin: UInt64) {
        guard !schedule.isEmpty, thread == nil else { return }
        thread = OSThread(name: "events") { [self] in
            for event in schedule {
                let due = origin + UInt64(event.offset * 1e6)
                let now = monotonicMicroseconds()
                if due > now { usleep(useconds_t(due - now)) }
                lock.withLock { started.append(monotonicMicroseconds()) }
                _ = event.command.withCString { command in
                    var pid: pid_t = 0
                    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
                    defer { argv.forEach { free($0) } }
                    guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { return Int32(-1) }
                    var status: Int32 = 0
                    return waitpid(pid, &status, 0)
                }
            }
        }
    }

    func join() { thread?.join() }
}

extension Sink {
    /// A checked stream ("P", then 'd' or 'u', the seed in 8 bytes and the window in ms in
    /// 4, big-endian). Down: send the pattern until the client goes. Up: receive and check for
    /// the window from the first byte, answer one JSON line (ArrivalReport), drain to EOF.
    func servePatternStream(_ fd: Int32) {
        guard let header = try? BlockingSocket.readExactly(fd, 13) else { return }
        let seed = header[1..<9].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let windowMs = header[9..<13].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        if header[0] == UInt8(ascii: "d") {
            var stream = PatternStream(seed: seed)
            try? stream.write(count: Int.max, to: fd)
            return
        }
        var receiver = PatternReceiver(seed: seed, windowMicros: UInt64(windowMs) * 1000)
        let report = receiver.receive(fd)
        guard var line = try? JSONEncoder().encode(report) else { return }
        line.append(UInt8(ascii: "\n"))
        _ = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while buffer.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
    }
}
