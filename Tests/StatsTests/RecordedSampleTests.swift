import DataPlane
import Foundation
import MPTCPKernel
import Stats
import TestSupport
import Testing

/// sock_diag bytes recorded on the testbed's gw during an upload over three shaped paths
/// (40/30/20 Mbit/s), two dumps 1 s apart, by tools/record/sock-diag.py, which also stored the
/// per-subflow rates its own Python decoder computed from the same bytes.
struct RecordedFixture: Decodable {
    struct Sample: Decodable {
        var time_us: UInt64
        var mptcp: [String]
        var tcp: [String]
    }
    struct Expected: Decodable {
        var cookie: UInt64
        var token: UInt32
        var tx_bps: Double
        var rx_bps: Double
    }
    var kernel: String
    var samples: [Sample]
    var expected_subflow_rates: [Expected]

    static func load(_ name: String) throws -> RecordedFixture {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name).json")
        return try JSONDecoder().decode(RecordedFixture.self, from: Data(contentsOf: url))
    }

    static func bytes(_ hex: String) -> [UInt8] { TestSupport.bytes(hex: hex) }

    static func sockets(_ datagrams: [String], _ diagProtocol: DiagProtocol) -> [DiagSocket] {
        datagrams.flatMap { NetlinkRecord.parseSockDiag(bytes($0), protocol: diagProtocol) }.compactMap {
            if case .diagSocket(let socket) = $0 { return socket }
            return nil
        }
    }

    /// The sample as KernelSampler would build it, with the testbed's gw interfaces.
    func kernelSample(_ index: Int) -> KernelSample {
        let raw = samples[index]
        let mptcp = Self.sockets(raw.mptcp, .mptcp)
        let connections = mptcp.filter { $0.state != .listen }
        let interfaces = [("wifi", "10.1.1.1"), ("eth", "10.1.2.1"), ("cell", "10.1.3.1")].enumerated().map { index, pair in
            InterfaceInfo(index: Int32(index + 3), name: pair.0, addresses: [IPAddress(parsing: pair.1)!])
        }
        return KernelSample(time: raw.time_us, connections: connections,
                            subflows: Self.sockets(raw.tcp, .tcp).filter { $0.subflow != nil },
                            listeners: mptcp.count - connections.count, interfaces: interfaces)
    }
}

@Suite("Sampling and rates on recorded kernel data")
struct RecordedSampleTests {
    @Test("the recorded dumps parse into one MPTCP connection and its three subflows, tied by token")
    func grouping() throws {
        let fixture = try RecordedFixture.load("gw-upload-three-paths")
        let sample = fixture.kernelSample(1)
        #expect(sample.connections.count == 1)
        let connection = try #require(sample.connections.first)
        let info = try #require(connection.mptcp)
        #expect(info.subflowsTotal == 3)
        #expect(!info.fallback)
        #expect(info.token == fixture.expected_subflow_rates.first?.token)
        #expect(sample.subflows.count == 3)
        #expect(sample.subflows.allSatisfy { $0.subflow?.localToken == info.token })
        // Exactly one initial (MP_CAPABLE) subflow; the joins carry the peer's token.
        #expect(sample.subflows.filter { !($0.subflow?.isJoin ?? true) }.count == 1)
        #expect(sample.subflows.filter { $0.subflow?.isJoin ?? false }.allSatisfy { $0.subflow?.remoteToken != 0 })
        #expect(Set(sample.subflows.map { $0.local.address.description }) == ["10.1.1.1", "10.1.2.1", "10.1.3.1"])
        #expect(sample.subflows.allSatisfy { $0.tcp != nil && $0.state == .established })
    }

    @Test("subflow rates from byte-counter deltas agree with an independent decoder of the same bytes")
    func rates() throws {
        let fixture = try RecordedFixture.load("gw-upload-three-paths")
        var tracker = RateTracker()
        let first = tracker.update(fixture.kernelSample(0), wallTime: 0)
        #expect(first.connections.first?.subflows.allSatisfy { $0.txBitsPerSecond == nil } == true, "no rate on first sight")
        let second = tracker.update(fixture.kernelSample(1), wallTime: 1)
        let connection = try #require(second.connections.first)
        let measured = connection.subflows.compactMap(\.txBitsPerSecond).sorted()
        let expected = fixture.expected_subflow_rates.map(\.tx_bps).sorted()
        #expect(measured.count == 3)
        for (ours, theirs) in zip(measured, expected) {
            #expect(abs(ours - theirs) <= theirs * 0.001, "ours \(ours) vs Python decoder \(theirs)")
        }
        // Plausible for the shaped links: each subflow under its link rate (40 Mbit/s at most).
        #expect(measured.allSatisfy { $0 > 5e6 && $0 < 42e6 })
        // Interfaces by local address; each carries its subflow's rate; history started.
        let byName = Dictionary(uniqueKeysWithValues: second.interfaces.map { ($0.name, $0) })
        #expect(Set(byName.keys) == ["wifi", "eth", "cell"])
        for subflow in connection.subflows {
            let interface = try #require(byName[subflow.interface])
            #expect(interface.subflows == 1)
            #expect(interface.txBitsPerSecond == subflow.txBitsPerSecond)
            #expect(interface.history.count == 2)
        }
        // The connection's data-level rate is close to the sum of its subflows' (headers and
        // retransmissions aside).
        let sum = measured.reduce(0, +)
        let data = try #require(connection.txBitsPerSecond)
        #expect(data > sum * 0.8 && data < sum * 1.05, "data-level \(data) vs subflows \(sum)")
        #expect(second.interval > 0.9 && second.interval < 1.5)
    }

    @Test("a subflow that disappears leaves its interface at zero, still listed for its history")
    func interfaceHistory() throws {
        let fixture = try RecordedFixture.load("gw-upload-three-paths")
        var tracker = RateTracker()
        _ = tracker.update(fixture.kernelSample(0), wallTime: 0)
        _ = tracker.update(fixture.kernelSample(1), wallTime: 1)
        var third = fixture.kernelSample(1)
        third.time += 1_000_000
        third.subflows.removeAll { $0.local.address == IPAddress(parsing: "10.1.1.1") }
        let snapshot = tracker.update(third, wallTime: 2)
        let wifi = try #require(snapshot.interfaces.first { $0.name == "wifi" })
        #expect(wifi.subflows == 0 && wifi.txBitsPerSecond == 0)
        #expect(wifi.history.count == 3 && wifi.history[1] > 0 && wifi.history[2] == 0)
        #expect(snapshot.connections.first?.subflows.count == 2)
    }
}

@Suite("sock_diag parser on bad input")
struct SockDiagBadInputTests {
    /// One SOCK_DIAG_BY_FAMILY message: an IPv4 inet_diag_msg and the given attributes.
    static func message(attributes: [UInt8]) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 72)
        body[0] = UInt8(AF_INET)
        body[1] = 1  // ESTABLISHED
        body += attributes
        let length = UInt32(16 + body.count)
        var header: [UInt8] = []
        withUnsafeBytes(of: length.littleEndian) { header += $0 }
        header += [20, 0, 0x02, 0]  // SOCK_DIAG_BY_FAMILY, NLM_F_MULTI
        header += [1, 0, 0, 0, 0, 0, 0, 0]
        return header + body
    }

    static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt16(4 + payload.count).littleEndian) { out += $0 }
        withUnsafeBytes(of: type.littleEndian) { out += $0 }
        out += payload
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    static func malformed(_ records: [NetlinkRecord]) -> [String] {
        records.compactMap { if case .malformed(let why) = $0 { return why }; return nil }
    }

    @Test("an MPTCP ULP without the local token is rejected with the reason")
    func missingToken() {
        let flags = Self.attribute(8, [0x40, 0, 0, 0])
        let ulp = Self.attribute(1, Array("mptcp".utf8) + [0]) + Self.attribute(3 | 0x8000, flags)
        let records = NetlinkRecord.parseSockDiag(Self.message(attributes: Self.attribute(19 | 0x8000, ulp)), protocol: .tcp)
        #expect(Self.malformed(records).first?.contains("without a valid token") == true)
    }

    @Test("a TLS ULP is a plain TCP socket, not a subflow")
    func otherULP() {
        let ulp = Self.attribute(1, Array("tls".utf8) + [0])
        let records = NetlinkRecord.parseSockDiag(Self.message(attributes: Self.attribute(19 | 0x8000, ulp)), protocol: .tcp)
        guard case .diagSocket(let socket)? = records.first else { Issue.record("\(records)"); return }
        #expect(socket.subflow == nil)
    }

    @Test("truncated messages and short headers are reported, never read past")
    func truncation() throws {
        let fixture = try RecordedFixture.load("gw-upload-three-paths")
        let whole = RecordedFixture.bytes(fixture.samples[0].tcp[0])
        #expect(Self.malformed(NetlinkRecord.parseSockDiag(Array(whole.prefix(40)), protocol: .tcp)) == ["truncated netlink message"])
        var shortBody = Self.message(attributes: [])
        shortBody = Array(shortBody.prefix(16 + 20))
        shortBody[0] = UInt8(shortBody.count)
        #expect(Self.malformed(NetlinkRecord.parseSockDiag(shortBody, protocol: .tcp)) == ["truncated inet_diag_msg"])
    }

    @Test("a netlink length near 2^32 is a truncated message, taken once (it once wrapped to a zero step and looped)")
    func hugeLength() {
        for length: UInt32 in [0xffff_ffff, 0xffff_fffe, 0xffff_fffd, 0x8000_0000] {
            // nlmsghdr: length, type 20 (SOCK_DIAG_BY_FAMILY), flags, seq, pid; then 64 bytes.
            var bytes = withUnsafeBytes(of: length.littleEndian) { Array($0) } + [20, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
            bytes += [UInt8](repeating: 0, count: 64)
            let records = NetlinkRecord.parseSockDiag(bytes, protocol: .tcp)
            #expect(records.count == 1, "length \(length): \(records.count) records")
        }
    }

    @Test("2,000 mutated recordings parse without crashing")
    func mutations() throws {
        let fixture = try RecordedFixture.load("gw-upload-three-paths")
        let originals = (fixture.samples[0].tcp + fixture.samples[0].mptcp).map(RecordedFixture.bytes)
        var generator = SystemRandomNumberGenerator()
        var parsed = 0
        for round in 0..<2000 {
            var bytes = originals[round % originals.count]
            for _ in 0..<(1 + round % 8) {
                let index = Int.random(in: 0..<bytes.count, using: &generator)
                bytes[index] = UInt8.random(in: 0...255, using: &generator)
            }
            if round % 5 == 0 { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &generator))) }
            parsed += NetlinkRecord.parseSockDiag(bytes, protocol: round % 2 == 0 ? .tcp : .mptcp).count
        }
        #expect(parsed > 0)
    }
}
