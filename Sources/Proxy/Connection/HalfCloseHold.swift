import MPTCPKernel

/// When a LAN client's half-close may leave the gateway as a DATA_FIN (client role only).
///
/// Linux (6.18 as before) refuses MPTCP joins once the MPTCP connection has left ESTABLISHED:
/// the gateway's path manager creates none after its DATA_FIN went out, and the server rejects
/// a join whose third ACK it processes after the DATA_FIN arrived (MPJoinRejected). A client
/// that sends its request and shuts down its write side at once (`nc -N`, a one-shot upload, the
/// test suite's download client) would so keep its connection on the initial subflow for good:
/// no standby path, no aggregation, no handover (docs/kernel-issues.md §3, reproducer
/// tools/repro/mptcp-halfclose-joins). The driver therefore holds such an EOF, bytes already all
/// sent, until the joins the path manager makes for a fresh connection are settled, and for no
/// longer than `longest` after the connection started. Only an EOF that comes before the far
/// side's first byte: one after an answer ends an exchange (a request, its response, a close),
/// and waiting would only make joins for a connection about to close.
///
/// Settled means: no subflow is still in SYN_SENT; the in-kernel path manager has used the local
/// endpoints it may (between one join establishing and the next starting nothing is in
/// SYN_SENT, so its count is the evidence); and one RTT of the slowest subflow has passed since,
/// so the last join's third ACK reaches the server before the DATA_FIN that may overtake it on
/// a faster path, and the path manager is looked at once more. The endpoint that carries the
/// initial subflow counts in mptcpi_local_addr_max but never in local_addr_used (measured on
/// 6.18 with three endpoints and three subflows: used 2, max 3), so the manager is done at
/// max − 1; where the initial address is no endpoint it makes one join more, which the look
/// after the RTT catches (it follows the previous join's establishment at once).
///
/// Re-checked on a short timer, not an event: the socket reports no event when a subflow
/// establishes, and the path manager's netlink events live on another thread; a half-close in a
/// connection's first half second is rare, and the checks end with it (at most
/// `longest / recheck` getsockopt calls).
struct HalfCloseHold: Equatable {
    /// The longest an EOF is held, counted from the connection's start (ms). Joins normally
    /// settle within three RTTs of the slowest path; a join whose SYN goes unanswered (a
    /// black-holed path) is not waited for.
    static let longest: UInt64 = 500
    /// How often unsettled joins are looked at again (ms).
    static let recheck: UInt64 = 5

    /// What the kernel says of the MPTCP leg's joins at one instant.
    struct Joins: Equatable {
        var endpointsUsed: Int
        var endpointsMax: Int
        /// Additional subflows the connection may have (mptcpi_subflows_max).
        var subflowsMax: Int
        var subflows: [SubflowHandshake]
    }

    enum Decision: Equatable {
        /// Send the DATA_FIN now.
        case forward
        /// Ask again at this instant (ms, the loop's clock).
        case hold(until: UInt64)
    }

    /// The instant the joins were first seen settled plus the settling RTT; 0 while unseen.
    private(set) var releaseAt: UInt64 = 0

    /// - Parameters: `joins`: nil where the kernel reports no subflows (fallback to TCP, or an
    ///   MPTCP_INFO failure): nothing to wait for.
    mutating func decide(now: UInt64, connectionStartedAt: UInt64, joins: Joins?) -> Decision {
        let giveUpAt = Self.saturating(connectionStartedAt, plus: Self.longest)
        guard now < giveUpAt, let joins, !joins.subflows.isEmpty else { return .forward }
        let extras = joins.subflows.count - 1
        let pathManagerHasMore = joins.endpointsUsed < joins.endpointsMax - 1 && extras < joins.subflowsMax
        if pathManagerHasMore || joins.subflows.contains(where: \.connecting) {
            releaseAt = 0  // a new join began: its own RTT counts from when it settles
            return .hold(until: min(Self.saturating(now, plus: Self.recheck), giveUpAt))
        }
        if releaseAt == 0 {
            let slowest = joins.subflows.map(\.rttMicroseconds).max() ?? 0
            // Rounded up to whole ms, plus one for the clock's granularity.
            releaseAt = Self.saturating(now, plus: (UInt64(slowest) + 999) / 1000 + 1)
        }
        // At releaseAt the caller asks again with a fresh look, which may still find a new join.
        return now >= releaseAt ? .forward : .hold(until: min(releaseAt, giveUpAt))
    }

    private static func saturating(_ instant: UInt64, plus milliseconds: UInt64) -> UInt64 {
        let (sum, overflow) = instant.addingReportingOverflow(milliseconds)
        return overflow ? .max : sum
    }
}
