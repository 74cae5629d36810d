/// The instants at which one connection has something to do, served by a single loop timer.
///
/// A connection has up to six deadlines over its life (the handshake's, a dial's next attempt
/// and its timeout, the idle check, the relay's next pump, the drain after an error reply),
/// rarely more than two at once. One `LoopTimer` each cost a timer object and a closure per
/// deadline and a heap entry per arming: three timers, six allocations and three heap entries
/// per B3 connection on the client, most of them cancelled long before they were due. Here the
/// driver keeps the instants and arms its one timer at the earliest (`ConnectionDriver.armTimer`).
///
/// Instants are the loop's monotonic milliseconds (since boot: never 0); 0 means "not set".
struct ConnectionDeadlines: Equatable {
    enum Kind: CaseIterable {
        // In the order due deadlines are handled (`order`).
        /// The connection is ending anyway: first, so nothing else runs for it.
        case drain
        /// Ends the handshake, and the dial with it.
        case handshake
        /// Before `dialAttempt`: a dial that has timed out starts no further attempt.
        case dialTimeout
        case dialAttempt
        /// The relay pumps again: a direction starved of pipes retries, or a held half-close is
        /// looked at again (HalfCloseHold). One kind for both, as both only pump.
        case repump
        case idle

        static let order: [Kind] = [.drain, .handshake, .dialTimeout, .dialAttempt, .repump, .idle]
    }

    private var drain: UInt64 = 0
    private var handshake: UInt64 = 0
    private var dialTimeout: UInt64 = 0
    private var dialAttempt: UInt64 = 0
    private var repump: UInt64 = 0
    private var idle: UInt64 = 0

    subscript(kind: Kind) -> UInt64 {
        get {
            switch kind {
            case .drain: drain
            case .handshake: handshake
            case .dialTimeout: dialTimeout
            case .dialAttempt: dialAttempt
            case .repump: repump
            case .idle: idle
            }
        }
        set {
            switch kind {
            case .drain: drain = newValue
            case .handshake: handshake = newValue
            case .dialTimeout: dialTimeout = newValue
            case .dialAttempt: dialAttempt = newValue
            case .repump: repump = newValue
            case .idle: idle = newValue
            }
        }
    }

    mutating func clear(_ kind: Kind) { self[kind] = 0 }

    mutating func clearAll() { self = ConnectionDeadlines() }

    /// The earliest instant set, if any.
    var earliest: UInt64? {
        // Unset is 0: as UInt64.max it never wins (no array of six: this runs per event).
        func rank(_ value: UInt64) -> UInt64 { value == 0 ? .max : value }
        let least = min(rank(drain), rank(handshake), rank(dialTimeout), rank(dialAttempt), rank(repump), rank(idle))
        return least == .max ? nil : least
    }

    /// The first deadline (in `Kind`'s order) at or before `now`, cleared: the caller handles it
    /// and asks again, since handling one may set or clear others.
    mutating func takeDue(now: UInt64) -> Kind? {
        // Kind.order, not allCases: the synthesised allCases builds an array at each call.
        for kind in Kind.order {
            let at = self[kind]
            if at != 0 && at <= now {
                clear(kind)
                return kind
            }
        }
        return nil
    }
}
