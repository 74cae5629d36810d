import Synchronization

/// What one event loop holds, readable from any thread: pipes lent to relays and kept idle,
/// and armed timers. The loop stores each figure when it changes (a relaxed store, the cost of
/// a plain write); `/metrics` reads them, so a soak test can see them return to where they began.
public final class LoopCensus: Sendable {
    private let lentPipes = Atomic<Int>(0)
    private let idlePipes = Atomic<Int>(0)
    private let timers = Atomic<Int>(0)
    private let connectionEvents = Atomic<UInt64>(0)

    public init() {}

    public var pipesLent: Int { lentPipes.load(ordering: .relaxed) }
    public var pipesIdle: Int { idlePipes.load(ordering: .relaxed) }
    /// Timers armed now (not the heap's stale entries of cancelled ones, which compaction bounds).
    public var timersArmed: Int { timers.load(ordering: .relaxed) }

    func recordPipes(lent: Int, idle: Int) {
        lentPipes.store(lent, ordering: .relaxed)
        idlePipes.store(idle, ordering: .relaxed)
    }

    func recordTimers(_ count: Int) { timers.store(count, ordering: .relaxed) }

    /// Socket events the loop's relayed connections and listeners have handled so far: it
    /// moves whenever a LAN host's connection is accepted or has bytes to move, and stands
    /// still while they are all idle. The server health checks and timers do not count. The
    /// path manager reads it to leave an idle gateway's subflows unsampled.
    public var connectionEventsHandled: UInt64 { connectionEvents.load(ordering: .relaxed) }

    /// One event of a relayed connection or a listener (the loop's thread; an uncontended add).
    public func noteConnectionEvent() { connectionEvents.wrappingAdd(1, ordering: .relaxed) }
}
