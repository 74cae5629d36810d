import Synchronization

/// What one event loop holds, readable from any thread: pipes lent to relays and kept idle,
/// and armed timers. The loop stores each figure when it changes (a relaxed store, the cost of
/// a plain write); `/metrics` reads them, so a soak test can see them return to where they began.
public final class LoopCensus: Sendable {
    private let lentPipes = Atomic<Int>(0)
    private let idlePipes = Atomic<Int>(0)
    private let timers = Atomic<Int>(0)

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
}
