import DataPlane
import MPTCPKernel
@testable import PathManager
import Testing

/// Failure detection from subflow samples, without a kernel: made-up samples at made-up times.
@Suite("Path health")
struct PathHealthTests {
    let wifi = IPAddress(parsing: "10.1.1.1")!
    let eth = IPAddress(parsing: "10.1.2.1")!
    var paths: Set<IPAddress> { [wifi, eth] }

    func sending(_ cookie: UInt64, _ address: IPAddress, acked: UInt64, unacked: UInt32 = 10, rtt: UInt32 = 2_000, rto: UInt32 = 204_000) -> SubflowSample {
        SubflowSample(cookie: cookie, localAddress: address, state: .established, unacked: unacked, bytesAcked: acked,
                      rttMicroseconds: rtt, rtoMicroseconds: rto)
    }

    /// A new subflow from `address` whose SYN is unanswered (cookie 9, apart from `sending`'s).
    func joining(_ address: IPAddress) -> SubflowSample {
        SubflowSample(cookie: 9, localAddress: address, state: .synSent)
    }

    @Test("data outstanding and no acknowledgement for longer than RTO + RTT fails the path once; progress never does")
    func stalledSend() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        var acked: UInt64 = 0
        // Both paths make progress for a second: nothing to say.
        for t in stride(from: UInt64(0), through: 1_000, by: 100) {
            acked += 50_000
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: acked), sending(2, eth, acked: acked)], paths: paths)
        }
        #expect(verdicts.isEmpty)
        // wifi stops being acknowledged at 1,100 ms; eth goes on.
        for t in stride(from: UInt64(1_100), through: 1_600, by: 100) {
            acked += 50_000
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: 550_000), sending(2, eth, acked: acked)], paths: paths)
        }
        // Last progress seen at 1,000; the limit is max(250, 204 + 2) = 250 ms: failed at the
        // first sample 250 ms or more after it, 1,300.
        #expect(verdicts.count == 1)
        guard case .failed(let address, let kind, let evidence)? = verdicts.first else { Issue.record("no failure: \(verdicts)"); return }
        #expect(address == wifi && kind == .stalledSend)
        #expect(evidence.contains("none acknowledged for 300 ms (limit 250 ms"), "\(evidence)")
        #expect(health.isFailed(wifi) && !health.isFailed(eth))
        #expect(health.nextDeadline == 1_300 + 2_000)
    }

    @Test("a long RTO (a slow path) raises the limit: a tail loss is not a failure")
    func slowPathTailLoss() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        // RTT 80 ms, RTO 300 ms: stalled up to 380 ms is still within one retransmission.
        for t in stride(from: UInt64(0), through: 350, by: 50) {
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: 1_000, rtt: 80_000, rto: 300_000)], paths: paths)
        }
        #expect(verdicts.isEmpty)
        verdicts += health.observe(now: 400, subflows: [sending(1, wifi, acked: 1_000, rtt: 80_000, rto: 300_000)], paths: paths)
        #expect(verdicts.count == 1)
    }

    @Test("the limit is fixed when the stall begins: an RTO that doubles with each retransmission does not push it away")
    func backedOffRTO() {
        var health = PathHealth()
        var verdicts = health.observe(now: 0, subflows: [sending(1, wifi, acked: 5, rtt: 40_000, rto: 248_000)], paths: paths)
        for (t, rto) in [(UInt64(100), UInt32(248_000)), (200, 496_000), (300, 992_000)] {
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: 5, rtt: 40_000, rto: rto)], paths: paths)
        }
        #expect(verdicts.count == 1)  // at 300 ms: 248 + 40 = 288 ms
    }

    @Test("a stall goes on counting when the kernel starts closing the subflow (FIN-WAIT-1) with its data still unacknowledged")
    func stallWhileClosing() {
        var health = PathHealth()
        var verdicts = health.observe(now: 0, subflows: [sending(1, wifi, acked: 5)], paths: paths)
        var closing = sending(1, wifi, acked: 5)
        closing.state = .finWait1
        for t in stride(from: UInt64(100), through: 300, by: 100) { verdicts += health.observe(now: t, subflows: [closing], paths: paths) }
        #expect(verdicts.count == 1)
    }

    @Test("idle subflows, and subflows of unmanaged addresses, are never judged")
    func idleAndForeign() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        let other = IPAddress(parsing: "192.168.9.9")!
        for t in stride(from: UInt64(0), through: 5_000, by: 100) {
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: 7, unacked: 0), sending(3, other, acked: 7)], paths: paths)
        }
        #expect(verdicts.isEmpty)
    }

    @Test("a subflow left in SYN-SENT for the join timeout (800 ms) fails its path")
    func joinTimeout() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        let joining = joining(eth)
        for t in stride(from: UInt64(0), through: 700, by: 100) { verdicts += health.observe(now: t, subflows: [joining], paths: paths) }
        #expect(verdicts.isEmpty)
        verdicts += health.observe(now: 800, subflows: [joining], paths: paths)
        #expect(verdicts == [.failed(eth, kind: .joinTimeout, evidence: "a new subflow from 10.1.2.1 unanswered for 800 ms")])
    }

    @Test("a join unanswered for 800 ms on a path whose other subflow keeps having data acknowledged lost only its SYN: no failure; once the acknowledgements stop too, it fails")
    func joinLostOnADeliveringPath() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        let joining = joining(wifi)
        var acked: UInt64 = 0
        // A lossy wifi: its established subflow goes on being acknowledged while a new one's
        // SYN waits for the kernel's 1 s retransmission. The join is listed first.
        for t in stride(from: UInt64(0), through: 1_200, by: 100) {
            acked += 20_000
            verdicts += health.observe(now: t, subflows: [joining, sending(1, wifi, acked: acked)], paths: paths)
        }
        #expect(verdicts.isEmpty, "\(verdicts)")
        // Then nothing more is acknowledged on wifi (now a black hole): the stalled send fails
        // the path once its limit (250 ms) has passed, at 1,450.
        for t in stride(from: UInt64(1_250), through: 1_500, by: 50) {
            verdicts += health.observe(now: t, subflows: [joining, sending(1, wifi, acked: acked)], paths: paths)
        }
        #expect(verdicts.count == 1)
        guard case .failed(wifi, _, _)? = verdicts.first else { Issue.record("\(verdicts)"); return }
    }

    @Test("a download proves its path by what it receives: a join lost meanwhile is no failure")
    func receivingProvesThePath() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        let joining = joining(wifi)
        for t in stride(from: UInt64(0), through: 1_200, by: 100) {
            let downloading = SubflowSample(cookie: 1, localAddress: wifi, state: .established, bytesAcked: 77, bytesReceived: t * 5_000)
            verdicts += health.observe(now: t, subflows: [joining, downloading], paths: paths)
        }
        #expect(verdicts.isEmpty, "\(verdicts)")
    }

    @Test("progress on another path, or progress seen before the SYN left, does not excuse a join")
    func progressElsewhereOrEarlierDoesNotCount() {
        var health = PathHealth()
        var acked: UInt64 = 0
        var verdicts: [PathHealthVerdict] = []
        // eth delivers throughout; wifi delivered until 200 ms, then its idle subflow has
        // nothing outstanding (a black hole on an idle path), and a wifi join starts at 300.
        for t in stride(from: UInt64(0), through: 200, by: 100) {
            acked += 10_000
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: acked, unacked: 0), sending(2, eth, acked: acked)], paths: paths)
        }
        let joining = joining(wifi)
        for t in stride(from: UInt64(300), through: 1_100, by: 100) {
            acked += 10_000
            verdicts += health.observe(now: t, subflows: [sending(1, wifi, acked: 30_000, unacked: 0), joining, sending(2, eth, acked: acked)], paths: paths)
        }
        #expect(verdicts == [.failed(wifi, kind: .joinTimeout, evidence: "a new subflow from 10.1.1.1 unanswered for 800 ms")])
    }

    @Test("a join excused by progress fails once the path has been silent for the join timeout (idle after it delivered)")
    func excuseEndsWhenThePathFallsSilent() {
        var health = PathHealth()
        var verdicts: [PathHealthVerdict] = []
        let joining = joining(wifi)
        // Acknowledged until 500 ms, then nothing is outstanding: idle, nothing to stall.
        for t in stride(from: UInt64(0), through: 1_200, by: 100) {
            let acked = UInt64(min(t, 500)) * 100
            verdicts += health.observe(now: t, subflows: [joining, sending(1, wifi, acked: acked, unacked: t <= 500 ? 10 : 0)], paths: paths)
        }
        #expect(verdicts.isEmpty, "\(verdicts)")
        verdicts += health.observe(now: 1_300, subflows: [joining, sending(1, wifi, acked: 50_000, unacked: 0)], paths: paths)
        #expect(verdicts == [.failed(wifi, kind: .joinTimeout, evidence: "a new subflow from 10.1.1.1 unanswered for 1300 ms")])
    }

    @Test("hold-down: re-admitted after 2 s; failing again soon doubles it up to the maximum; a long healthy spell resets it")
    func holdDownBackoff() {
        var configuration = PathHealthConfiguration()
        configuration.maximumHoldDownMilliseconds = 8_000
        var health = PathHealth(configuration: configuration)
        let joining = SubflowSample(cookie: 1, localAddress: wifi, state: .synSent)
        var now: UInt64 = 0
        var holdDowns: [UInt64] = []
        for round in 0..<5 {
            // Fail by a join that is never answered (a new cookie each round: a new subflow).
            var sample = joining
            sample.cookie = UInt64(round + 1)
            _ = health.observe(now: now, subflows: [sample], paths: paths)
            let failed = health.observe(now: now + 800, subflows: [sample], paths: paths)
            #expect(failed.count == 1)
            now += 800
            #expect(health.due(now: now).isEmpty)
            guard let deadline = health.nextDeadline else { Issue.record("no deadline"); return }
            let back = health.due(now: deadline)
            guard case .readmit(let address, let holdDown)? = back.first else { Issue.record("not re-admitted: \(back)"); return }
            #expect(address == wifi && !health.isFailed(wifi))
            holdDowns.append(holdDown)
            now = deadline
        }
        #expect(holdDowns == [2_000, 4_000, 8_000, 8_000, 8_000])
        // Healthy for longer than forgiveAfter: the next failure starts from 2 s again.
        now += 31_000
        let fresh = SubflowSample(cookie: 99, localAddress: wifi, state: .synSent)
        _ = health.observe(now: now, subflows: [fresh], paths: paths)
        _ = health.observe(now: now + 800, subflows: [fresh], paths: paths)
        #expect(health.nextDeadline == now + 800 + 2_000)
    }

    @Test("extreme samples do not trap: counters at their limits, a clock that goes back")
    func extremes() {
        var health = PathHealth()
        let huge = sending(1, wifi, acked: .max, unacked: .max, rtt: .max, rto: .max)
        _ = health.observe(now: .max - 5, subflows: [huge], paths: paths)
        _ = health.observe(now: 0, subflows: [huge], paths: paths)
        _ = health.observe(now: .max, subflows: [huge], paths: paths)
        _ = health.due(now: .max)
        let joining = SubflowSample(cookie: 2, localAddress: eth, state: .synSent)
        _ = health.observe(now: .max - 1, subflows: [joining], paths: paths)
        let failed = health.observe(now: .max, subflows: [joining], paths: paths)
        #expect(failed.isEmpty)  // 1 ms in SYN-SENT
    }

    @Test("the policy takes a failed path out like a dead link (standby promoted first) and puts it back on re-admission")
    func policyActsOnVerdicts() {
        let up: UInt32 = 0x1 | 0x40 | 0x10000
        let wlan = LinkState(index: 3, name: "wlan0", flags: up, operState: 6)
        let wwan = LinkState(index: 5, name: "wwan0", flags: up, operState: 6)
        let cell = IPAddress(parsing: "100.64.0.10")!
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wlan, wwan], addresses: [InterfaceAddress(interfaceIndex: 3, address: wifi, prefixLength: 24),
                                                         InterfaceAddress(interfaceIndex: 5, address: cell, prefixLength: 24)],
                         existing: [], classify: { ["wlan0": .wifi, "wwan0": .cellular][$0] ?? .other })
        let out = policy.pathFailed(wifi, evidence: "10 segments outstanding")
        #expect(out.reason.contains("path 10.1.1.1 on wlan0 failed: 10 segments outstanding"))
        #expect(out.commands == [
            .setFlags(MPTCPEndpoint(id: 2, address: cell, flags: [.subflow], interfaceIndex: 5)),
            .deleteEndpoint(MPTCPEndpoint(id: 1, address: wifi, flags: [.subflow], interfaceIndex: 3)),
        ])
        // Routing stays, so the path can be tried again; limits stay.
        #expect(policy.activePathAddresses == [cell] && policy.pathAddresses == [wifi, cell])
        let back = policy.pathReadmitted(wifi, reason: "hold-down over")
        #expect(back.commands == [
            .setFlags(MPTCPEndpoint(id: 2, address: cell, flags: [.subflow, .backup], interfaceIndex: 5)),
            .addEndpoint(MPTCPEndpoint(id: 1, address: wifi, flags: [.subflow], interfaceIndex: 3)),
        ])
        // A verdict about a path that is not in use changes nothing.
        #expect(policy.pathFailed(IPAddress(parsing: "10.9.9.9")!, evidence: "x").commands.isEmpty)
    }
}
