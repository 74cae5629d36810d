import PathManager
import Testing

/// How path health takes each sample, from made-up states.
@Suite("Sample method")
struct SampleMethodTests {
    /// A quiet host 1 s after a lookup, 1 s after a dump, nothing outstanding.
    func quiet() -> SampleMethod.State {
        var state = SampleMethod.State(now: 10_000)
        state.lastTaken = 9_000
        state.lastDump = 9_000
        state.activity = 42
        state.activityAtLastSample = 42
        return state
    }

    @Test("quiet with nothing outstanding: skipped; any activity, outstanding data or the floor passed: taken")
    func quietSkips() {
        #expect(SampleMethod.choose(quiet()) == .skip)
        var busy = quiet()
        busy.activity = 43
        #expect(SampleMethod.choose(busy) == .lookup)
        var outstanding = quiet()
        outstanding.outstanding = true
        #expect(SampleMethod.choose(outstanding) == .lookup)
        var floor = quiet()
        floor.lastTaken = 0
        floor.lastDump = 9_500
        #expect(SampleMethod.choose(floor) == .lookup)
        // No activity count (the standalone pm): never skipped.
        var unknown = quiet()
        unknown.activity = nil
        unknown.activityAtLastSample = nil
        #expect(SampleMethod.choose(unknown) == .lookup)
        // Nothing sampled yet: the first sample is taken.
        var first = quiet()
        first.activityAtLastSample = nil
        #expect(SampleMethod.choose(first) == .lookup)
    }

    @Test("an alert or a list that asks for one is a dump even when quiet; otherwise a dump once the interval has passed")
    func dumps() {
        var alert = quiet()
        alert.alertUntil = 10_001
        #expect(SampleMethod.choose(alert) == .dump)
        var untrusted = quiet()
        untrusted.listNeedsDump = true
        #expect(SampleMethod.choose(untrusted) == .dump)
        var due = quiet()
        due.activity = 43
        due.lastDump = 8_000
        #expect(SampleMethod.choose(due) == .dump)
        due.lastDump = 8_001
        #expect(SampleMethod.choose(due) == .lookup)
        // A clock that went back counts as no time passed.
        var back = quiet()
        back.activity = 43
        back.lastDump = 20_000
        #expect(SampleMethod.choose(back) == .lookup)
    }
}
