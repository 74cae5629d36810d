import HeapModule
import Synchronization

/// A cookie nonce: 16 bytes held as two words, so remembering one allocates nothing.
public struct Nonce: Hashable, Sendable {
    let high: UInt64
    let low: UInt64

    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == ConvertCookie.nonceLength else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.high = high
        self.low = low
    }
}

/// One key's accepted nonces, kept until their cookies can no longer pass the freshness check,
/// so each cookie is good for one connection.
///
/// The invariant every rule below keeps: **a nonce the cache no longer remembers has a
/// timestamp at or below `floor`, and cookies at or below the floor are refused.** So nothing
/// forgotten can ever be replayed, across evictions, ageing, clock steps and restarts:
/// - When full, the entry with the *lowest timestamp* is evicted (never the oldest inserted):
///   the floor rises only as far as the least recent cookie kept, so with the future skew
///   capped tightly (`Freshness.future`) the floor can pass the present by at most that skew.
/// - Entries age out on the *monotonic* clock, when the wall-clock time their cookie could
///   still pass has elapsed; a step of the wall clock cannot make the cache forget early.
/// - The floor starts at the process's start time: a restart does not reopen replays of
///   cookies the previous process accepted.
/// - Each key has its own cache and floor: a key that floods (a stolen one) fills and raises
///   only its own, and honest keys keep connecting.
public final class ReplayCache: Sendable {
    private struct Entry: Comparable {
        /// The cookie's Unix time in milliseconds.
        var timestamp: UInt64
        /// Monotonic millisecond after which the cookie cannot pass the freshness check.
        var expires: UInt64
        var nonce: Nonce
        static func < (a: Entry, b: Entry) -> Bool { (a.timestamp, a.expires) < (b.timestamp, b.expires) }
        static func == (a: Entry, b: Entry) -> Bool { a.timestamp == b.timestamp && a.expires == b.expires && a.nonce == b.nonce }
    }

    private struct State {
        var seen: Set<Nonce> = []
        var byTimestamp = Heap<Entry>()
        var floor: UInt64
    }

    public enum Verdict: Equatable, Sendable {
        case fresh
        case replayed
        /// At or below the floor: the nonce may have been forgotten, so it cannot be trusted.
        case belowFloor
    }

    public let capacity: Int
    private let state: Mutex<State>

    /// - Parameters:
    ///   - capacity: most nonces kept at once.
    ///   - floor: cookies stamped at or before this Unix millisecond are refused (the start time).
    public init(capacity: Int, floor: UInt64) {
        self.capacity = max(1, capacity)
        state = Mutex(State(floor: floor))
    }

    /// Records `nonce` if it was not seen. The caller has checked freshness: `timestamp` is at
    /// most `freshness.past` before and `freshness.future` after `wallNow`. All times are in
    /// milliseconds: Unix time for `timestamp` and `wallNow`, any monotonic clock for `monotonicNow`.
    public func admit(nonce: Nonce, timestamp: UInt64, wallNow: UInt64, monotonicNow: UInt64, freshness: Freshness) -> Verdict {
        state.withLock { state in
            // Forget what has aged out, raising the floor over it.
            while let oldest = state.byTimestamp.min, oldest.expires <= monotonicNow {
                state.byTimestamp.removeMin()
                state.seen.remove(oldest.nonce)
                state.floor = max(state.floor, oldest.timestamp)
            }
            if timestamp <= state.floor { return .belowFloor }
            if state.seen.contains(nonce) { return .replayed }
            if state.seen.count >= capacity, let lowest = state.byTimestamp.popMin() {
                state.seen.remove(lowest.nonce)
                state.floor = max(state.floor, lowest.timestamp)
                if timestamp <= state.floor { return .belowFloor }
            }
            // Milliseconds until the cookie could no longer pass: (timestamp + past) - wallNow,
            // within 0...(past + future) after the freshness check; saturating all the same.
            let lastValid = timestamp.addingReportingOverflow(freshness.past)
            let remaining = lastValid.overflow ? freshness.past + freshness.future
                : (lastValid.partialValue > wallNow ? min(lastValid.partialValue - wallNow, freshness.past + freshness.future) : 0)
            let expires = monotonicNow.addingReportingOverflow(remaining + 1)
            state.seen.insert(nonce)
            state.byTimestamp.insert(Entry(timestamp: timestamp, expires: expires.overflow ? .max : expires.partialValue, nonce: nonce))
            return .fresh
        }
    }

    public var count: Int { state.withLock { $0.seen.count } }
    public var floor: UInt64 { state.withLock { $0.floor } }
}

/// How far a cookie's timestamp may be from the server's clock, in milliseconds. The future
/// side is tighter: it bounds how far a flood of future-stamped cookies can lift a key's floor
/// past the present.
public struct Freshness: Sendable, Equatable {
    public var past: UInt64
    public var future: UInt64

    public init(pastSeconds: UInt64 = 60, futureSeconds: UInt64 = 5) {
        past = pastSeconds * 1000
        future = futureSeconds * 1000
    }

    /// Whether `timestamp` is acceptable at `now`; compares differences, never sums, so a
    /// peer's timestamp near 2^64 cannot overflow anything.
    public func accepts(_ timestamp: UInt64, now: UInt64) -> Bool {
        timestamp <= now ? now - timestamp <= past : timestamp - now <= future
    }
}
