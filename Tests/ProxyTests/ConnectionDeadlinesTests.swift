@testable import Proxy
import Testing

/// The one-timer bookkeeping of a connection's deadlines, without a loop.
@Suite("Connection deadlines")
struct ConnectionDeadlinesTests {
    @Test("the earliest set deadline is the one the timer is armed at; none set, none")
    func earliest() {
        var deadlines = ConnectionDeadlines()
        #expect(deadlines.earliest == nil)
        deadlines[.idle] = 300_000
        deadlines[.handshake] = 10_000
        deadlines[.dialTimeout] = 5_000
        #expect(deadlines.earliest == 5_000)
        deadlines.clear(.dialTimeout)
        #expect(deadlines.earliest == 10_000)
        deadlines.clearAll()
        #expect(deadlines.earliest == nil)
    }

    @Test("due deadlines come out one at a time in the order that ends a connection first, each once")
    func dueOrder() {
        var deadlines = ConnectionDeadlines()
        deadlines[.idle] = 100
        deadlines[.dialAttempt] = 100
        deadlines[.dialTimeout] = 90
        deadlines[.handshake] = 100
        deadlines[.repump] = 200
        var due: [ConnectionDeadlines.Kind] = []
        while let kind = deadlines.takeDue(now: 150) { due.append(kind) }
        // A dial that timed out starts no attempt, and the handshake's end ends the dial.
        #expect(due == [.handshake, .dialTimeout, .dialAttempt, .idle])
        #expect(deadlines.earliest == 200)
        #expect(deadlines.takeDue(now: 150) == nil)
    }

    @Test("setting a deadline to 0 unsets it")
    func zeroUnsets() {
        var deadlines = ConnectionDeadlines()
        deadlines[.handshake] = 0
        #expect(deadlines.earliest == nil)
        deadlines[.drain] = 1
        #expect(deadlines.takeDue(now: 1) == .drain)
    }
}
