import DataPlane
import MPTCPKernel

/// One MPTCP subflow as the health monitor needs it, from a sock_diag sample.
public struct SubflowSample: Hashable, Sendable {
    /// The kernel's socket cookie: the same subflow in every sample.
    public var cookie: UInt64
    public var localAddress: IPAddress
    public var state: TCPState
    /// Segments sent and not yet acknowledged.
    public var unacked: UInt32
    public var bytesAcked: UInt64
    /// Bytes the peer sent on it that arrived: a download's subflow proves its path this way,
    /// since it sends nothing to be acknowledged.
    public var bytesReceived: UInt64
    public var rttMicroseconds: UInt32
    public var rtoMicroseconds: UInt32

    public init(cookie: UInt64, localAddress: IPAddress, state: TCPState, unacked: UInt32 = 0, bytesAcked: UInt64 = 0,
                bytesReceived: UInt64 = 0, rttMicroseconds: UInt32 = 0, rtoMicroseconds: UInt32 = 0) {
        self.cookie = cookie
        self.localAddress = localAddress
        self.state = state
        self.unacked = unacked
        self.bytesAcked = bytesAcked
        self.bytesReceived = bytesReceived
        self.rttMicroseconds = rttMicroseconds
        self.rtoMicroseconds = rtoMicroseconds
    }
}

/// What the health monitor concluded about a path (a local address).
public enum PathHealthVerdict: Hashable, Sendable {
    /// The path delivers nothing: take it out of use. `evidence` says what was seen.
    case failed(IPAddress, kind: FailureKind, evidence: String)
    /// Its hold-down is over: put it back in use and see (its subflows are created again).
    case readmit(IPAddress, afterMilliseconds: UInt64)

    public enum FailureKind: String, Hashable, Sendable {
        /// Data outstanding on a subflow and no acknowledgement for longer than an RTO and an RTT.
        case stalledSend = "stalled_send"
        /// A new subflow's SYN unanswered for the join timeout.
        case joinTimeout = "join_timeout"
    }
}

public struct PathHealthConfiguration: Sendable {
    /// A subflow with data outstanding is stalled when its acknowledged bytes do not move for
    /// longer than max(this, its RTO + its RTT, as they were when they last moved): a path that
    /// delivers anything acknowledges the RTO's retransmission within one round trip.
    public var stallFloorMilliseconds: UInt64 = 250
    /// A subflow still in SYN-SENT after this long: its first SYN or the answer was lost (TCP
    /// sends the SYN again at 1 s), so its path does not answer. Below 1 s so that the client's
    /// health checks, which give up after 1 s, can show it on an idle gateway. Not a failure
    /// while another subflow on the same path has data acknowledged or received (since the SYN
    /// left, and within this long): the path delivers, and only the SYN was lost (under 30 %
    /// loss, about one join in two).
    public var joinTimeoutMilliseconds: UInt64 = 800
    /// How long a failed path stays out before it is tried again; doubled each time it fails
    /// again soon after coming back, up to the maximum, so a flapping path is not a storm.
    public var holdDownMilliseconds: UInt64 = 2_000
    public var maximumHoldDownMilliseconds: UInt64 = 60_000
    /// A path that stays healthy this long after re-admission starts again from the initial
    /// hold-down.
    public var forgiveAfterMilliseconds: UInt64 = 30_000

    public init() {}
}

/// Failure detection from the subflows' own progress, as a pure state machine: samples of the
/// kernel's subflows in, verdicts out. The in-kernel path manager never notices a path that
/// silently drops everything while its link stays up (a Wi-Fi without backhaul, lost
/// coverage); the scheduler only skips such a subflow once MPTCP-level retransmissions have
/// marked it stale, and new subflows keep being tried on it. This monitor sees the sender's
/// side: outstanding data that is never acknowledged, and joins that are never answered.
///
/// It cannot see a path that fails while it only receives (a download with the server sending
/// on it): the gateway's subflow then has nothing outstanding. That needs a probe sent on the
/// path; see docs/path-manager.md.
public struct PathHealth {
    public let configuration: PathHealthConfiguration

    private struct Track {
        var localAddress: IPAddress
        var bytesAcked: UInt64
        var bytesReceived: UInt64
        /// With data outstanding: the sample that last saw its acknowledged bytes move (or first
        /// saw it). The stall measured from there is never longer than the real one.
        var stalledSince: UInt64?
        /// max(floor, RTO + RTT) as they were when the stall clock started.
        var stallLimit: UInt64?
        /// When it was first seen in SYN-SENT.
        var synSentSince: UInt64?
    }
    private var tracks: [UInt64: Track] = [:]
    /// When each path last had data acknowledged, or received, on one of its subflows: proof
    /// that it delivers (a download's data keeps coming only while its ACKs get through too),
    /// which a join unanswered since before then cannot outweigh. One entry per managed path.
    private var lastProgress: [IPAddress: UInt64] = [:]

    private struct Failure {
        var holdDown: UInt64
        var readmitAt: UInt64?
        var readmittedAt: UInt64?
    }
    /// Paths that failed: out of use until `readmitAt`, then on probation.
    private var failures: [IPAddress: Failure] = [:]
    /// Re-admitted paths not yet seen to work: no subflow on them has completed its handshake
    /// since they came back.
    private var unproven: Set<IPAddress> = []

    public init(configuration: PathHealthConfiguration = PathHealthConfiguration()) {
        self.configuration = configuration
    }

    /// Whether the last sample showed anything that may be a failure in the making: data
    /// outstanding that was not acknowledged since the sample before, or a SYN unanswered. The
    /// service then samples at its fast rate, and at a steady one otherwise (each sample costs
    /// a dump of the kernel's TCP table).
    public private(set) var suspicious = false

    /// Whether the last sample showed data outstanding or a SYN unanswered on a watched path:
    /// until a sample shows none, something can still stall without the host doing anything.
    public private(set) var outstanding = false

    /// The paths with a failure on record (out of use, or on probation after one).
    public var failedAddresses: [IPAddress] { Array(failures.keys) }

    /// Paths that new connections should not start over: out of use, or back but unproven.
    public var avoidedAddresses: Set<IPAddress> {
        unproven.union(failures.filter { $0.value.readmitAt != nil }.keys)
    }

    /// Whether a path is out of use now.
    public func isFailed(_ address: IPAddress) -> Bool { failures[address]?.readmitAt != nil }

    /// When `due` next has something to say (a hold-down ending); nil if nothing is pending.
    public var nextDeadline: UInt64? { failures.values.compactMap(\.readmitAt).min() }

    /// A sample of every subflow on the host at `now` (milliseconds, monotonic). Only subflows
    /// on `paths` (the managed path addresses in use) count.
    public mutating func observe(now: UInt64, subflows: [SubflowSample], paths: Set<IPAddress>) -> [PathHealthVerdict] {
        var seen: Set<UInt64> = []
        var verdicts: [PathHealthVerdict] = []
        suspicious = false
        outstanding = false
        var failedNow: Set<IPAddress> = []
        // Progress first, for the whole sample: a join is judged against every subflow of its
        // path, whatever order the kernel listed them in.
        for subflow in subflows where paths.contains(subflow.localAddress) && subflow.state != .synSent {
            if let track = tracks[subflow.cookie],
               subflow.bytesAcked != track.bytesAcked || subflow.bytesReceived != track.bytesReceived {
                lastProgress[subflow.localAddress] = now
            }
        }
        for subflow in subflows where paths.contains(subflow.localAddress) && !isFailed(subflow.localAddress) {
            seen.insert(subflow.cookie)
            var track = tracks[subflow.cookie] ?? Track(localAddress: subflow.localAddress, bytesAcked: subflow.bytesAcked,
                                                      bytesReceived: subflow.bytesReceived)
            var verdict: PathHealthVerdict?
            switch subflow.state {
            case .synSent:
                suspicious = true
                outstanding = true
                track.stalledSince = nil
                let since = track.synSentSince ?? now
                track.synSentSince = since
                // Excused while the path delivers: progress after the SYN left and within the
                // last join timeout (a path that falls silent later is judged from then on).
                let deliveredSince = lastProgress[subflow.localAddress].map {
                    $0 >= since && elapsed($0, now) < configuration.joinTimeoutMilliseconds
                } ?? false
                if elapsed(since, now) >= configuration.joinTimeoutMilliseconds && !deliveredSince {
                    verdict = .failed(subflow.localAddress, kind: .joinTimeout,
                                      evidence: "a new subflow from \(subflow.localAddress) unanswered for \(elapsed(since, now)) ms")
                }
            case .established, .finWait1, .finWait2, .closing, .closeWait, .lastAck:
                // Data can be outstanding in every state after the handshake; the kernel itself
                // starts closing a stalled subflow (FIN-WAIT-1) while its data is still unacked.
                track.synSentSince = nil
                if subflow.state == .established { unproven.remove(subflow.localAddress) }
                if subflow.unacked != 0 { outstanding = true }
                if subflow.unacked == 0 {
                    track.stalledSince = nil
                    track.stallLimit = nil
                } else if subflow.bytesAcked != track.bytesAcked || track.stalledSince == nil {
                    // Progress (or first sight): the clock starts here, with the limit of this
                    // moment. Later samples must not raise it: the RTO doubles with every
                    // retransmission of a stall, and a limit that follows it is never reached.
                    track.stalledSince = now
                    track.stallLimit = max(configuration.stallFloorMilliseconds, UInt64(subflow.rtoMicroseconds / 1000) + UInt64(subflow.rttMicroseconds / 1000))
                } else {
                    // No progress since the last sample: watch closely from here.
                    suspicious = true
                    if let since = track.stalledSince, let limit = track.stallLimit, elapsed(since, now) >= limit {
                        verdict = .failed(subflow.localAddress, kind: .stalledSend,
                                          evidence: "\(subflow.unacked) segments outstanding on a subflow from \(subflow.localAddress), none acknowledged for \(elapsed(since, now)) ms (limit \(limit) ms: RTO + RTT when the stall began)")
                    }
                }
            default:
                track.stalledSince = nil
                track.stallLimit = nil
                track.synSentSince = nil
            }
            track.bytesAcked = subflow.bytesAcked
            track.bytesReceived = subflow.bytesReceived
            tracks[subflow.cookie] = track
            if let verdict, case .failed(let address, _, _) = verdict, !failedNow.contains(address) {
                failedNow.insert(address)
                verdicts.append(verdict)
            }
        }
        // Forget subflows that are gone, and those of paths out of use.
        tracks = tracks.filter { seen.contains($0.key) && !failedNow.contains($0.value.localAddress) }
        lastProgress = lastProgress.filter { paths.contains($0.key) && !failedNow.contains($0.key) }
        for address in failedNow { fail(address, now: now) }
        return verdicts
    }

    /// Hold-downs that are over at `now`: those paths are put back in use.
    public mutating func due(now: UInt64) -> [PathHealthVerdict] {
        var verdicts: [PathHealthVerdict] = []
        for (address, failure) in failures.sorted(by: { $0.key.description < $1.key.description }) {
            if let at = failure.readmitAt, at <= now {
                failures[address]?.readmitAt = nil
                failures[address]?.readmittedAt = now
                unproven.insert(address)
                verdicts.append(.readmit(address, afterMilliseconds: failure.holdDown))
            }
        }
        return verdicts
    }

    /// The path's link or address went away (or came back): its history no longer applies.
    public mutating func forget(_ address: IPAddress) {
        failures.removeValue(forKey: address)
        unproven.remove(address)
        lastProgress.removeValue(forKey: address)
        tracks = tracks.filter { $0.value.localAddress != address }
    }

    private mutating func fail(_ address: IPAddress, now: UInt64) {
        var holdDown = configuration.holdDownMilliseconds
        if let previous = failures[address], let back = previous.readmittedAt, elapsed(back, now) < configuration.forgiveAfterMilliseconds {
            // Failed again soon after coming back: wait longer before the next try.
            holdDown = min(configuration.maximumHoldDownMilliseconds, previous.holdDown.multipliedReportingOverflow(by: 2).partialValue)
        }
        unproven.remove(address)
        failures[address] = Failure(holdDown: holdDown, readmitAt: now > UInt64.max - holdDown ? UInt64.max : now + holdDown, readmittedAt: nil)
    }

    /// Milliseconds from `start` to `now`, zero if the clock seems to have gone back.
    private func elapsed(_ start: UInt64, _ now: UInt64) -> UInt64 { now >= start ? now - start : 0 }
}
