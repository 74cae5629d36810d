import DataPlane
import Foundation
import Glibc
import TestSupport
import Testing

/// The testbed's impairments measured as docs/testbed.md states them: round trips within 1 ms of
/// twice the one-way delay, single-path TCP near its shaped rate with the delay on, loss within
/// 10 % of the setting, a black hole that drops everything while the link stays up.
@Suite("Testbed impairments", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct TestbedImpairmentTests {
    /// ping from gw over one path: (sent, received, median RTT ms, least RTT ms), user-to-user
    /// times (-U: kernel receive timestamps are taken before the delay line holds the packet).
    /// The delay line never releases a packet early, so scheduling can only add to a round
    /// trip: the least of them is the delay line's own floor, the median what a connection
    /// sees. On a 2-core VM a sleeping process now and then wakes milliseconds late (measured:
    /// 7 of 500 10-ms sleeps over 1 ms late, the worst 4.9 ms), and while other suites' transfers
    /// fill both cores the median drifted up by 1.4-1.6 ms (a clean CI run: eth 21.4 ms for
    /// 20, cell 11.6 for 10), where on a quiet machine it stays within 0.5 ms.
    func ping(_ testbed: Testbed, path: String, count: Int, flood: Bool = false) throws -> (Int, Int, Double, Double) {
        let source = Testbed.pathAddresses[path]!
        let peer = source.replacingOccurrences(of: ".1", with: ".2", options: .backwards, range: source.index(source.endIndex, offsetBy: -2)..<source.endIndex)
        // ping at real-time priority, like the delay line: -U times include ping's own wakeup,
        // which other suites' transfers on the same 2 cores would otherwise stretch.
        var arguments = ["chrt", "-f", "10", "ping", "-U", "-c", "\(count)", "-I", source, "-W", "1"]
        arguments += flood ? ["-f", "-q"] : ["-i", "0.05"]
        let text = (try? testbed.exec(.gw, arguments + [peer])) ?? ""
        let numbers = text.split(separator: "\n").first { $0.contains("packets transmitted") }?
            .split(separator: " ").compactMap { Int($0) } ?? []
        let times = text.split(separator: "\n").compactMap { line -> Double? in
            guard let range = line.range(of: "time=") else { return nil }
            return Double(line[range.upperBound...].prefix { $0 == "." || $0.isNumber })
        }.sorted()
        let median = times.isEmpty ? -1 : times[times.count / 2]
        return (numbers.first ?? 0, numbers.count > 1 ? numbers[1] : 0, median, times.first ?? -1)
    }

    @Test("delays 5/10/20 ms one way: round trips within 1 ms of 10/20/40; TCP on wifi near its 40 Mbit/s at 40 ms")
    func delay() throws {
        let testbed = try Testbed(delays: ["wifi": 20, "eth": 10, "cell": 5])
        defer { testbed.down() }
        for (path, oneWay) in [("wifi", 20), ("eth", 10), ("cell", 5)] {
            // 50, not 20: under load the least of more round trips still finds the floor.
            let (_, received, rtt, least) = try ping(testbed, path: path, count: 50)
            print("testbed: \(path) one-way \(oneWay) ms: RTT median \(rtt) ms, least \(least) ms")
            // The floor within 1 ms both ways: a delay line that held too little (or nothing,
            // nft's queue bypass) or too much fails it. The median only within 5 ms: above
            // the floor by scheduling alone (see `ping`).
            #expect(received == 50 && abs(least - Double(2 * oneWay)) <= 1.0, "\(path): least RTT \(least) ms for \(oneWay) ms each way")
            #expect(rtt >= least && rtt - Double(2 * oneWay) <= 5.0, "\(path): median RTT \(rtt) ms for \(oneWay) ms each way")
        }
        // Single-path TCP with the delay on: a checked transfer pinned to wifi by its source.
        let server = try HashServer(namespace: testbed.namespace(.vps), address: try SocketAddress(parsing: "10.1.1.2:7000"))
        defer { server.stop() }
        let size = 8 << 20
        let result = try OSThread.run(in: testbed.namespace(.gw)) {
            try HashServer.transfer(to: try SocketAddress(parsing: "10.1.1.2:7000"), upload: size, download: size, seed: 5,
                                    timeoutSeconds: 30, from: IPAddress(parsing: "10.1.1.1"))
        }
        let up = Double(size) * 8 / result.uploadSeconds / 1e6, down = Double(size) * 8 / result.downloadSeconds / 1e6
        print("testbed: wifi at 40 ms RTT: up \(up) Mbit/s, down \(down) Mbit/s (tbf 40mbit)")
        // 8 MiB includes slow start at 40 ms: measured 31-35 of 40; the bound catches a delay line that caps the window (2.2 Mbit/s when it held packets on the sender's egress).
        #expect(up > 24 && down > 24, "single-path TCP at 40 ms: up \(up), down \(down) Mbit/s of 40")

        // Changed mid-run, and off again.
        try testbed.impair("wifi", .delay(0))
        #expect(try ping(testbed, path: "wifi", count: 10).2 < 1.0)
    }

    @Test("loss 20 % one way at each end: 36 % of round trips lost, i.e. 20 % per direction within 10 %; a black hole keeps the link up")
    func lossAndBlackhole() throws {
        let testbed = try Testbed()
        defer { testbed.down() }
        try testbed.impair("eth", .loss(20))
        let (sent, received, _, _) = try ping(testbed, path: "eth", count: 4000, flood: true)
        let perDirection = 1 - (Double(received) / Double(max(1, sent))).squareRoot()
        print("testbed: eth loss 20 %: \(received) of \(sent) round trips, \(perDirection * 100) % per direction")
        #expect(abs(perDirection - 0.20) <= 0.02, "per-direction loss \(perDirection) for a setting of 0.20")

        try testbed.impair("cell", .blackhole(true))
        #expect(try ping(testbed, path: "cell", count: 3).1 == 0)
        #expect(try testbed.exec(.gw, ["ip", "-br", "link", "show", "cell"]).contains(" UP "), "a black hole is not a link down")
        try testbed.impair("cell", .blackhole(false))
        #expect(try ping(testbed, path: "cell", count: 3).1 == 3)
    }
}

@Suite("Round trips of a connection's setup", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct SetupRoundTripTests {
    @Test("a request and its response through the chain take two round trips of the path, not three (Nagle held the server's second small write)")
    func twoRoundTrips() throws {
        // 10 ms each way on every path: a round trip is 20 ms; LAN and origin links add none.
        try withChain(destinationPort: 8000, delays: ["wifi": 10, "eth": 10, "cell": 10]) { chain in
            let origin = try TextHTTPServer(namespace: chain.testbed.namespace(.origin),
                                            address: try SocketAddress(parsing: "\(Testbed.originAddress):8000"), body: String(repeating: "x", count: 100))
            defer { origin.stop() }
            let address = chain.forwardAddress
            var times: [Double] = []
            for _ in 0..<7 {
                let (elapsed, received) = try OSThread.run(in: chain.testbed.namespace(.lan)) { () -> (Double, Int) in
                    let started = monotonicMilliseconds()
                    let fd = try BlockingSocket.connect(to: address, timeoutSeconds: 5)
                    defer { close(fd) }
                    try Array("GET / HTTP/1.1\r\nHost: origin\r\n\r\n".utf8).withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
                    var total = 0
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = recv(fd, &buffer, buffer.count, 0)
                        if n <= 0 { break }
                        total += n
                    }
                    return (Double(monotonicMilliseconds() - started), total)
                }
                #expect(received > 100)
                times.append(elapsed)
            }
            let median = times.sorted()[times.count / 2]
            print("setup round trips at 20 ms RTT: \(times) ms, median \(median)")
            // Two round trips (the MPTCP handshake; the request and its response) are 40 ms;
            // with the server's reply and the origin's bytes held apart by Nagle it was 63.
            // At least the two round trips: below them the delay line was not running (nft's
            // queue bypass lets packets through undelayed), and the bound above proves nothing.
            #expect(median >= 38 && median < 52, "median \(median) ms for a request and response at 20 ms RTT")
        }
    }
}
