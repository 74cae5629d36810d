import MPTCPKernel
@testable import Proxy
import Testing

/// When a gateway lets a LAN client's early half-close go as a DATA_FIN, without sockets.
@Suite("Half-close hold")
struct HalfCloseHoldTests {
    static let start: UInt64 = 1_000_000

    /// `subflows` established (RTT in µs) and `connecting` more in SYN_SENT.
    func joins(used: Int, max: Int = 3, subflowsMax: Int = 3, established rtts: [UInt32], connecting: Int = 0) -> HalfCloseHold.Joins {
        let up = rtts.map { SubflowHandshake(connecting: false, rttMicroseconds: $0) }
        let pending = Array(repeating: SubflowHandshake(connecting: true, rttMicroseconds: 0), count: connecting)
        return .init(endpointsUsed: used, endpointsMax: max, subflowsMax: subflowsMax, subflows: up + pending)
    }

    @Test("a fresh connection whose path manager has not run yet waits; each join in SYN_SENT keeps it waiting; once all are up it waits the slowest RTT, looks again, and forwards")
    func waitsForTheJoins() {
        var hold = HalfCloseHold()
        let t = Self.start
        // The path manager has not run yet: no joins, none of the two other endpoints used.
        #expect(hold.decide(now: t + 2, connectionStartedAt: t, joins: joins(used: 0, established: [10_000])) == .hold(until: t + 7))
        // First join in SYN_SENT.
        #expect(hold.decide(now: t + 7, connectionStartedAt: t, joins: joins(used: 1, established: [10_000], connecting: 1)) == .hold(until: t + 12))
        // It is up; the manager has not started the next (used 1 of max − 1 = 2): still waiting.
        #expect(hold.decide(now: t + 27, connectionStartedAt: t, joins: joins(used: 1, established: [10_000, 20_000])) == .hold(until: t + 32))
        #expect(hold.decide(now: t + 32, connectionStartedAt: t, joins: joins(used: 2, established: [10_000, 20_000], connecting: 1)) == .hold(until: t + 37))
        // All three up: the slowest RTT (80 ms) plus a millisecond from now.
        let settled = joins(used: 2, established: [10_000, 20_000, 79_500])
        #expect(hold.decide(now: t + 117, connectionStartedAt: t, joins: settled) == .hold(until: t + 117 + 81))
        // A look in between (another event) does not move the release.
        #expect(hold.decide(now: t + 150, connectionStartedAt: t, joins: settled) == .hold(until: t + 198))
        #expect(hold.decide(now: t + 198, connectionStartedAt: t, joins: settled) == .forward)
    }

    @Test("a join that starts during the settling wait restarts it from when it settles")
    func lateJoinRestartsTheWait() {
        var hold = HalfCloseHold()
        let t = Self.start
        // The initial address is no endpoint: the manager may use all three.
        #expect(hold.decide(now: t + 10, connectionStartedAt: t, joins: joins(used: 2, established: [1_000, 1_000, 1_000])) == .hold(until: t + 12))
        #expect(hold.decide(now: t + 12, connectionStartedAt: t, joins: joins(used: 3, established: [1_000, 1_000, 1_000], connecting: 1)) == .hold(until: t + 17))
        #expect(hold.releaseAt == 0)
        #expect(hold.decide(now: t + 17, connectionStartedAt: t, joins: joins(used: 3, established: [1_000, 1_000, 1_000, 3_000])) == .hold(until: t + 21))
        #expect(hold.decide(now: t + 21, connectionStartedAt: t, joins: joins(used: 3, established: [1_000, 1_000, 1_000, 3_000])) == .forward)
    }

    @Test("nothing to wait for forwards at once: fallback or no report, one endpoint, the subflow limit reached")
    func nothingToWaitFor() {
        let t = Self.start
        var hold = HalfCloseHold()
        #expect(hold.decide(now: t + 1, connectionStartedAt: t, joins: nil) == .forward)
        hold = HalfCloseHold()
        #expect(hold.decide(now: t + 1, connectionStartedAt: t, joins: .init(endpointsUsed: 0, endpointsMax: 3, subflowsMax: 3, subflows: [])) == .forward)
        // A single endpoint (the initial subflow's own): no join will come; RTT 0 still waits 1 ms.
        hold = HalfCloseHold()
        #expect(hold.decide(now: t + 1, connectionStartedAt: t, joins: joins(used: 0, max: 1, established: [0])) == .hold(until: t + 2))
        #expect(hold.decide(now: t + 2, connectionStartedAt: t, joins: joins(used: 0, max: 1, established: [0])) == .forward)
        // The subflows limit allows one more subflow, and it exists: endpoints left do not count.
        hold = HalfCloseHold()
        #expect(hold.decide(now: t + 1, connectionStartedAt: t, joins: joins(used: 1, max: 5, subflowsMax: 1, established: [500, 500])) == .hold(until: t + 3))
    }

    @Test("never held past `longest` from the connection's start, whatever the joins say, and no overflow near the clock's end")
    func boundedHold() {
        let t = Self.start
        var hold = HalfCloseHold()
        let stuck = joins(used: 1, established: [10_000], connecting: 1)   // a SYN into a black hole
        #expect(hold.decide(now: t + HalfCloseHold.longest - 2, connectionStartedAt: t, joins: stuck) == .hold(until: t + HalfCloseHold.longest))
        #expect(hold.decide(now: t + HalfCloseHold.longest, connectionStartedAt: t, joins: stuck) == .forward)
        // A slow path's RTT does not stretch the hold past the bound either.
        hold = HalfCloseHold()
        let slow = joins(used: 2, established: [10_000, 20_000, 900_000])
        #expect(hold.decide(now: t + 300, connectionStartedAt: t, joins: slow) == .hold(until: t + HalfCloseHold.longest))
        hold = HalfCloseHold()
        #expect(hold.decide(now: .max - 1, connectionStartedAt: .max - 10, joins: stuck) == .hold(until: .max))
    }
}
