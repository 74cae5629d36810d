import Synchronization

/// Remembers nonces of accepted cookies until their timestamp can no longer pass the freshness
/// check, so each cookie is good for one connection. Bounded: when full, the oldest entry is
/// dropped and its timestamp becomes a floor below which cookies are refused, so a dropped
/// nonce can never be replayed (the cost under a flood is refusing some old-but-fresh cookies).
public final class ReplayCache: Sendable {
    private struct State {
        var seen: [[UInt8]: UInt64] = [:]
        var order: [(nonce: [UInt8], timestamp: UInt64)] = []
        var head = 0
        var floor: UInt64 = 0
    }

    public let capacity: Int
    public let window: UInt64
    private let state = Mutex(State())

    /// - Parameters:
    ///   - capacity: most nonces kept at once.
    ///   - window: seconds a timestamp stays acceptable on either side of now.
    public init(capacity: Int = 1 << 17, window: UInt64 = 60) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.window = window
    }

    public enum Verdict: Equatable, Sendable {
        case fresh
        case replayed
        case belowFloor
    }

    /// Records `nonce` if it was not seen; the caller has already checked the timestamp window.
    public func admit(nonce: [UInt8], timestamp: UInt64, now: UInt64) -> Verdict {
        state.withLock { state in
            // Forget what has aged out: such cookies fail the freshness check anyway.
            while state.head < state.order.count, state.order[state.head].timestamp + window < now {
                state.seen.removeValue(forKey: state.order[state.head].nonce)
                state.head += 1
            }
            if timestamp <= state.floor { return .belowFloor }
            if state.seen[nonce] != nil { return .replayed }
            if state.order.count - state.head >= capacity {
                let oldest = state.order[state.head]
                state.seen.removeValue(forKey: oldest.nonce)
                state.floor = max(state.floor, oldest.timestamp)
                state.head += 1
                if timestamp <= state.floor { return .belowFloor }
            }
            state.seen[nonce] = timestamp
            state.order.append((nonce, timestamp))
            if state.head > 4096 && state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
            return .fresh
        }
    }

    public var count: Int { state.withLock { $0.order.count - $0.head } }
}
