/// Happy Eyeballs connection attempts (RFC 8305 §5), as a pure state machine: which candidate
/// to start when, and when the dial as a whole has succeeded or failed. The driver owns the
/// sockets and the timers and reports back.
///
/// Attempts start one at a time in the plan's order; the next starts when the current one
/// fails or after the Connection Attempt Delay (250 ms by default) with no answer, whichever
/// comes first, so a dead address costs a quarter of a second instead of a connect timeout.
/// The first attempt to connect wins and every other is abandoned.
///
/// `exclusive` plans (the client's servers) run one attempt at a time: when the delay passes,
/// the attempt is abandoned before the next starts, because a request may already ride in its
/// SYN and two servers must never both act on it.
struct DialScheduler {
    struct Decision: Equatable {
        /// Start this candidate now.
        var start: Int?
        /// (Re)arm the attempt-delay timer.
        var armDelay = false
        /// The dial is over: the candidate that connected, or the errno it failed with.
        var outcome: Result<Int, DialFailure>?
        /// Close these attempts (an exclusive plan moving on).
        var abandon: [Int] = []
    }

    struct DialFailure: Error, Equatable {
        var errno: Int32
    }

    let candidateCount: Int
    let exclusive: Bool
    private var nextCandidate = 0
    /// Attempts started and not yet reported (a few at most: an array, not a set, which would
    /// allocate a hash table per connection).
    private(set) var inFlight: [Int] = []
    private var lastErrno: Int32 = 0
    private var finished = false

    init(candidateCount: Int, exclusive: Bool = false) {
        self.candidateCount = candidateCount
        self.exclusive = exclusive
    }

    mutating func begin() -> Decision {
        startNext(orFail: 101 /* ENETUNREACH: nothing to try */)
    }

    /// The attempt-delay timer fired with attempts still pending.
    mutating func delayElapsed() -> Decision {
        guard !finished, nextCandidate < candidateCount else { return Decision() }
        guard exclusive else { return startNext(orFail: lastErrno) }
        let abandoned = inFlight.sorted()
        inFlight.removeAll()
        lastErrno = 110  // ETIMEDOUT: what the abandoned attempt amounts to
        var decision = startNext(orFail: lastErrno)
        decision.abandon = abandoned
        return decision
    }

    mutating func attemptSucceeded(_ index: Int) -> Decision {
        guard !finished, takeInFlight(index) else { return Decision() }
        finished = true
        return Decision(outcome: .success(index))
    }

    mutating func attemptFailed(_ index: Int, errno: Int32) -> Decision {
        guard !finished, takeInFlight(index) else { return Decision() }
        lastErrno = errno
        if nextCandidate < candidateCount { return startNext(orFail: errno) }
        if inFlight.isEmpty {
            finished = true
            return Decision(outcome: .failure(DialFailure(errno: errno)))
        }
        return Decision()
    }

    private mutating func startNext(orFail errno: Int32) -> Decision {
        guard nextCandidate < candidateCount else {
            finished = true
            return Decision(outcome: .failure(DialFailure(errno: errno)))
        }
        let index = nextCandidate
        nextCandidate += 1
        inFlight.append(index)
        return Decision(start: index, armDelay: nextCandidate < candidateCount)
    }

    /// Removes `index` from the attempts in flight; false if it was not among them.
    private mutating func takeInFlight(_ index: Int) -> Bool {
        guard let position = inFlight.firstIndex(of: index) else { return false }
        inFlight.remove(at: position)
        return true
    }
}
