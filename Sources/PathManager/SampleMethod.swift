/// How path health takes its next sample, chosen purely from the service's state so that the
/// order of the reasons is tested without a kernel (`SampleMethodTests`).
public enum SampleMethod: String, Hashable, Sendable {
    /// Nothing to see: the host was quiet since a sample that showed nothing outstanding.
    case skip = "skipped"
    /// Look up the subflows the watch list names.
    case lookup
    /// Dump the kernel's TCP table: the only way to see joins in SYN-SENT, and the whole
    /// truth when the watch list cannot be trusted.
    case dump

    public struct State: Sendable {
        public var now: UInt64
        /// Until then every sample is a dump (an alert, or the second after a re-admission).
        public var alertUntil: UInt64 = 0
        public var lastDump: UInt64 = 0
        public var dumpInterval: UInt64 = 2_000
        public var lastTaken: UInt64 = 0
        public var quietFloor: UInt64 = 10_000
        /// The watch list asks for a dump (start, lost events, past its capacity).
        public var listNeedsDump: Bool = false
        /// The last sample showed data outstanding or a SYN unanswered.
        public var outstanding: Bool = false
        /// The host's activity count now and at the last sample taken; nil now: unknown.
        public var activity: UInt64?
        public var activityAtLastSample: UInt64?

        public init(now: UInt64) { self.now = now }
    }

    public static func choose(_ state: State) -> SampleMethod {
        // Reasons to dump come first: a skip must never hide an alert's joins, nor leave a
        // list that cannot be trusted standing.
        if state.listNeedsDump || state.now < state.alertUntil { return .dump }
        // Quiet: nothing was written since a sample that had nothing outstanding, so nothing
        // can have stalled; still one sample per floor, for data held behind a closed window.
        if let activity = state.activity, activity == state.activityAtLastSample, !state.outstanding,
           elapsed(state.lastTaken, state.now) < state.quietFloor {
            return .skip
        }
        return elapsed(state.lastDump, state.now) >= state.dumpInterval ? .dump : .lookup
    }

    private static func elapsed(_ start: UInt64, _ now: UInt64) -> UInt64 { now >= start ? now - start : 0 }
}
