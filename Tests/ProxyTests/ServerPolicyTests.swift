import ConvertProtocol
import DataPlane
import Glibc
@testable import Proxy
import ProxyProtocols
import Testing

@Suite("Server policy: access rules, limits, pools")
struct ServerPolicyTests {
    func address(_ text: String) -> IPAddress { IPAddress(parsing: text)! }

    @Test("built-in refusals: every private, local and special range, also written as IPv4-mapped or NAT64 IPv6", arguments: [
        "127.0.0.1", "127.255.0.9", "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
        "192.168.1.1", "100.64.0.1", "100.127.255.254", "169.254.169.254", "169.254.0.1", "192.0.0.8", "198.18.0.1",
        "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "febf::1", "fc00::1",
        "fd12:3456::1", "ff02::1", "fec0::1", "::ffff:10.1.2.3", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
        "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
    ])
    func builtInRefusals(destination: String) {
        let verdict = AccessPolicy().verdict(for: address(destination), port: 80, keyID: "gw")
        #expect(!verdict.allowed, "\(destination) allowed")
        #expect(verdict.rule.hasPrefix("default: "), "\(destination): \(verdict.rule)")
    }

    @Test("public destinations pass; the host's own address does not", arguments: ["1.1.1.1", "198.51.100.2", "2001:db8::1", "64:ff9b::808:808", "172.32.0.1", "100.128.0.1"])
    func publicAllowed(destination: String) {
        #expect(AccessPolicy().verdict(for: address(destination), port: 443, keyID: nil).allowed)
        let own = AccessPolicy(hostAddresses: [address(destination)]).verdict(for: address(destination), port: 443, keyID: nil)
        #expect(!own.allowed && own.rule == "default: this host's own address")
    }

    @Test("rules: first match, per key, by port range; a key that may only reach 10.0.5.0/24:5432")
    func rules() throws {
        let policy = AccessPolicy(rules: [
            AccessRule(action: .allow, networks: [try IPNetwork(parsing: "10.0.5.0/24")], ports: [PortRange(5432, 5432)], keys: ["db-gw"], name: "db"),
            AccessRule(action: .deny, keys: ["db-gw"], name: "db-gw nothing else"),
            AccessRule(action: .deny, networks: [try IPNetwork(parsing: "203.0.113.0/24")], ports: [try PortRange(parsing: "25")], name: "no smtp"),
            AccessRule(action: .allow, networks: [try IPNetwork(parsing: "192.168.7.0/24")], proxyProtocol: true, name: "office"),
        ])
        #expect(policy.verdict(for: address("10.0.5.9"), port: 5432, keyID: "db-gw") == AccessVerdict(allowed: true, rule: "db", proxyProtocol: false))
        #expect(policy.verdict(for: address("10.0.5.9"), port: 5433, keyID: "db-gw").rule == "db-gw nothing else")
        #expect(policy.verdict(for: address("1.1.1.1"), port: 443, keyID: "db-gw").rule == "db-gw nothing else")
        #expect(policy.verdict(for: address("10.0.5.9"), port: 5432, keyID: "other").rule == "default: private (RFC 1918, 10.0.0.0/8)")
        #expect(policy.verdict(for: address("203.0.113.9"), port: 25, keyID: "other").rule == "no smtp")
        #expect(policy.verdict(for: address("203.0.113.9"), port: 26, keyID: "other").allowed)
        #expect(policy.verdict(for: address("::ffff:192.168.7.3"), port: 80, keyID: nil) == AccessVerdict(allowed: true, rule: "office", proxyProtocol: true))
        let whitelist = AccessPolicy(defaultAction: .deny)
        #expect(whitelist.verdict(for: address("1.1.1.1"), port: 443, keyID: nil).rule == "default-action deny")
    }

    @Test("networks and port ranges parse strictly")
    func parsing() {
        #expect((try? IPNetwork(parsing: "10.0.5.1/24")) == nil)   // host bits set
        #expect((try? IPNetwork(parsing: "10.0.0.0/33")) == nil)
        #expect((try? IPNetwork(parsing: "fe80::/10"))?.description == "fe80::/10")
        #expect((try? PortRange(parsing: "8080-8000")) == nil)
        #expect((try? PortRange(parsing: "0")) == nil)
        #expect((try? PortRange(parsing: "8000-8080"))?.contains(8042) == true)
    }

    @Test("admission: handshakes in progress per source, released when relaying; IPv6 counted per /64")
    func handshakesPerSource() throws {
        var limits = ServerLimits()
        limits.maxHandshakesPerSource = 3
        let control = AdmissionControl(limits: limits)
        let source = address("198.51.100.7")
        var held: [AdmissionControl.AcceptLeases] = []
        for _ in 0..<3 { held.append(try control.admit(source: source, now: 0).get()) }
        guard case .failure(let refusal) = control.admit(source: source, now: 0) else {
            Issue.record("a fourth handshake was admitted")
            return
        }
        #expect(refusal.code == .resourceExceeded && refusal.value == [1] && refusal.reason.contains("max-handshakes-per-source"))
        #expect((try? control.admit(source: address("198.51.100.8"), now: 0).get()) != nil)   // another source is not affected
        held[0].handshake = nil   // one relays: its handshake no longer counts
        #expect((try? control.admit(source: source, now: 0).get()) != nil)
        var v6: [AdmissionControl.AcceptLeases] = []
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] { v6.append(try control.admit(source: address(host), now: 0).get()) }
        #expect((try? control.admit(source: address("2001:db8:1:2::77"), now: 0).get()) == nil)
        #expect((try? control.admit(source: address("2001:db8:1:3::1"), now: 0).get()) != nil)
        _ = v6
    }

    @Test("admission: new connections per second per source as a token bucket; overall and per-key limits")
    func rateAndTotals() throws {
        var limits = ServerLimits()
        limits.newConnectionsPerSourcePerSecond = 10
        limits.maxConnections = 1_000
        limits.maxConnectionsPerKey = 2
        let refusals = LimitCounter()
        let control = AdmissionControl(limits: limits, refused: { refusals.add($0) })
        let source = address("198.51.100.7")
        var admitted = 0
        for _ in 0..<40 { if let leases = try? control.admit(source: source, now: 1_000).get() { admitted += 1; _ = leases } }
        #expect(admitted == 20)   // the burst: twice the rate
        #expect((try? control.admit(source: source, now: 1_500).get()) != nil)   // half a second refills five
        #expect(refusals.count(.ratePerSource) == 20)
        #expect(control.admit(key: "gw") == nil)
        #expect(control.admit(key: "gw") == nil)
        #expect(control.admit(key: "gw")?.code == .resourceExceeded)
        control.keyConnectionEnded("gw")
        #expect(control.admit(key: "gw") == nil)
        var small = ServerLimits()
        small.maxConnections = 2
        let total = AdmissionControl(limits: small)
        let a = try total.admit(source: address("192.0.2.1"), now: 0).get()
        let b = try total.admit(source: address("192.0.2.2"), now: 0).get()
        #expect((try? total.admit(source: address("192.0.2.3"), now: 0).get()) == nil)
        _ = (a, b)
    }

    @Test("admission: the source table is bounded; idle sources are forgotten first")
    func trackedSources() throws {
        var limits = ServerLimits()
        limits.trackedSources = 16
        limits.newConnectionsPerSourcePerSecond = 1_000
        let control = AdmissionControl(limits: limits)
        for i in 0..<16 { _ = try control.admit(source: address("198.51.100.\(i)"), now: 0).get() }   // leases dropped at once: idle
        #expect(control.trackedSourceCount == 16)
        _ = try control.admit(source: address("198.51.100.200"), now: 5_000).get()
        #expect(control.trackedSourceCount == 1)
        var busy: [AdmissionControl.AcceptLeases] = []
        for i in 0..<15 { busy.append(try control.admit(source: address("203.0.113.\(i)"), now: 5_000).get()) }
        guard case .failure(let refusal) = control.admit(source: address("203.0.113.99"), now: 5_000) else {
            Issue.record("the table grew past its bound")
            return
        }
        #expect(refusal.reason.contains("tracked-sources"))
    }

    @Test("pools: each strategy spreads over healthy members; source hash moves only a lost member's share")
    func pools() throws {
        let members = (1...4).map { SocketAddress(.v4([10, 0, 5, UInt8($0)]), port: 80) }
        var health = HealthCheckSettings()
        health.fall = 1
        health.rise = 2
        for balance in UpstreamPool.Balance.allCases {
            let pool = UpstreamPool(name: "web", members: members, balance: balance, health: health)
            var firsts: [SocketAddress: Int] = [:]
            for i in 0..<400 {
                let source = SocketAddress(.v4([198, 51, 100, UInt8(i % 200)]), port: UInt16(1000 + i))
                firsts[pool.candidates(source: source)[0], default: 0] += 1
            }
            #expect(firsts.count == 4, "\(balance): \(firsts)")
            #expect(pool.candidates(source: nil).count == 4)
        }
        let hashed = UpstreamPool(name: "sticky", members: members, balance: .sourceHash, health: health)
        let sources = (0..<200).map { SocketAddress(.v4([198, 51, 100, UInt8($0)]), port: 5000) }
        let before = sources.map { hashed.candidates(source: $0)[0] }
        _ = hashed.members[2].record(success: false, settings: health)   // member 3 goes down
        #expect(!hashed.members[2].isUp)
        let after = sources.map { hashed.candidates(source: $0)[0] }
        for (old, new) in zip(before, after) where old != members[2] { #expect(old == new, "a source of a healthy member moved") }
        #expect(!after.contains(members[2]))
        for member in hashed.members { _ = member.record(success: false, settings: health) }
        #expect(hashed.candidates(source: nil).isEmpty)
        // Least connections follows the leases.
        let least = UpstreamPool(name: "least", members: Array(members.prefix(2)), balance: .leastConnections, health: health)
        let lease = least.members[0].lease()
        #expect((0..<10).allSatisfy { _ in least.candidates(source: nil)[0] == members[1] })
        _ = lease
    }

    @Test("health: fall failures in a row take a member out, rise successes bring it back; one blip flaps nothing")
    func healthHysteresis() {
        var state = HealthState()
        func record(_ success: Bool) -> Bool { state.record(success: success, rise: 2, fall: 3) }
        #expect(record(false) == false)
        #expect(record(true) == false)   // the streak starts again
        #expect(record(false) == false)
        #expect(record(false) == false)
        #expect(record(false) == true)
        #expect(!state.isUp)
        #expect(record(true) == false)
        #expect(record(true) == true)
        #expect(state.isUp)
    }

    @Test("PROXY v2: the header origin servers decode, IPv4, IPv6 and mixed")
    func proxyHeader() throws {
        let v4 = ProxyProtocolV2.encode(.init(source: SocketAddress(.v4([10, 10, 0, 2]), port: 51000), destination: SocketAddress(.v4([198, 51, 100, 2]), port: 80)))
        #expect(v4 == ProxyProtocolV2.signature + [0x21, 0x11, 0, 12, 10, 10, 0, 2, 198, 51, 100, 2, 0xc7, 0x38, 0, 80])
        let mixed = ProxyProtocolV2.Header(source: SocketAddress(.v4([10, 10, 0, 2]), port: 1), destination: SocketAddress(IPAddress(parsing: "2001:db8::1")!, port: 443))
        let (decoded, length) = try ProxyProtocolV2.decode(ProxyProtocolV2.encode(mixed) + [1, 2, 3])
        #expect(length == 52 && decoded == mixed)
        #expect(throws: ProxyProtocolV2.DecodeError.badSignature) { try ProxyProtocolV2.decode([UInt8](repeating: 0, count: 20)) }
    }

    @Test("peer text is escaped for logs: no control characters, no forged lines, bounded")
    func peerText() {
        #expect(PeerText.escaped("gw-1") == "gw-1")
        #expect(PeerText.escaped("a\nb\u{1b}[2J\"\\") == "a\\x0ab\\x1b[2J\\\"\\\\")
        #expect(PeerText.escaped(String(repeating: "x", count: 500)).count == PeerText.defaultLimit + 1)
        #expect(PeerText.escaped("é") == "\\xc3\\xa9")
    }

    @Test("rejection lines are bounded per source and minute, and the next one says how many were suppressed")
    func rejectionLog() {
        let limiter = RejectionLogLimiter(perMinute: 3)
        let source = address("198.51.100.7")
        #expect((0..<3).map { _ in limiter.admit(source, nowMilliseconds: 1_000) } == [0, 0, 0])
        #expect((0..<5).map { _ in limiter.admit(source, nowMilliseconds: 2_000) } == [nil, nil, nil, nil, nil])
        #expect(limiter.admit(address("198.51.100.8"), nowMilliseconds: 2_000) == 0)
        #expect(limiter.admit(source, nowMilliseconds: 61_000) == 5)
        #expect(limiter.suppressed == 5)
    }

    @Test("logging never blocks: with the writer stuck on a full pipe, lines are counted, not waited for")
    func logSinkNeverBlocks() throws {
        signal(SIGPIPE, SIG_IGN)   // as the proxy does: the writer may outlive the pipe's reader
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let sink = LogSink(fd: fds[1], capacity: 64)
        let handler = NonBlockingLogHandler(label: "test", level: .info, sink: sink)
        let line = String(repeating: "x", count: 4000)
        let started = monotonicMilliseconds()
        // Nobody reads the pipe: after 64 KiB the writer thread blocks in write(2).
        for _ in 0..<10_000 { handler.log(level: .notice, message: "\(line)", metadata: nil, source: "t", file: "", function: "", line: 0) }
        let elapsed = monotonicMilliseconds() - started
        #expect(elapsed < 2_000, "logging 10,000 lines took \(elapsed) ms")
        #expect(sink.droppedLines > 9_000)
    }
}

/// Limit refusals seen by an AdmissionControl, from any thread.
final class LimitCounter: @unchecked Sendable {
    private var counts: [LimitName: Int] = [:]
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func add(_ limit: LimitName) { pthread_mutex_lock(&mutex); counts[limit, default: 0] += 1; pthread_mutex_unlock(&mutex) }
    func count(_ limit: LimitName) -> Int { pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }; return counts[limit] ?? 0 }
}
