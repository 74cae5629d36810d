import DataPlane
import Foundation
import Testing

/// The event loop's bookkeeping, without sockets.
@Suite("Event loop")
struct EventLoopTests {
    @Test("a thread carries its name to the kernel (what top -H and perf show), cut to the kernel's 15 bytes")
    func threadsAreNamed() {
        let seen = Shared<[String]>([])
        for name in ["path-manager", "a-name-longer-than-fifteen"] {
            let thread = OSThread(name: name) {
                let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
                seen.update { $0.append(comm.trimmingCharacters(in: .newlines)) }
            }
            thread.join()
        }
        #expect(seen.value == ["path-manager", "a-name-longer-t"])
    }

    @Test("timers cancelled or re-armed do not pile up in the heap, and the live ones still fire")
    func staleTimersAreCompacted() throws {
        let loop = try EventLoop(index: 0)
        var fired = 0
        let live = (0..<3_000).map { _ in LoopTimer { fired += 1 } }
        for timer in live { loop.arm(timer, at: 1) }   // due at once
        // What a connection does: arm a deadline hours away, then end long before it.
        for _ in 0..<200_000 {
            let timer = LoopTimer {}
            loop.arm(timer, after: 3_600_000)
            timer.cancel()
        }
        // A timer re-armed again and again (an idle deadline pushed back) leaves one live entry.
        let pushed = LoopTimer { fired += 1_000_000 }
        for step in 0..<50_000 { loop.arm(pushed, after: 3_600_000 + UInt64(step)) }
        #expect(loop.timerEntryCount <= 2 * (live.count + 1) + 1024, "heap holds \(loop.timerEntryCount) entries")
        // The census counts armed timers, not entries: what /metrics shows a soak test.
        #expect(loop.census.timersArmed == live.count + 1)
        loop.execute { loop.stop() }
        loop.run()
        #expect(fired == live.count)
        #expect(pushed.isArmed)
        #expect(loop.census.timersArmed == 1)
        pushed.cancel()
        pushed.cancel()  // twice: counted once
        #expect(loop.census.timersArmed == 0)
    }

    @Test("an invalidated timer releases what its action captured at once, though its heap entry stays, and never fires")
    func invalidatedTimerReleasesItsCapture() throws {
        final class Owner {}
        let loop = try EventLoop(index: 0)
        weak var released: Owner?
        var fired = false
        let timer: LoopTimer
        do {
            let owner = Owner()
            released = owner
            timer = LoopTimer { [owner] in _ = owner; fired = true }
        }
        loop.arm(timer, at: 1)  // due at once
        #expect(released != nil, "the armed timer's action holds its capture")
        timer.invalidate()
        #expect(released == nil, "an invalidated timer still held its capture")
        #expect(loop.timerEntryCount == 1 && loop.census.timersArmed == 0)
        loop.execute { loop.stop() }
        loop.run()
        #expect(!fired)
    }

    @Test("the census follows the pipes lent and kept idle")
    func pipeCensus() throws {
        let loop = try EventLoop(index: 0)
        let first = try loop.pipes.take()
        let second = try loop.pipes.take()
        #expect(loop.census.pipesLent == 2 && loop.census.pipesIdle == 0)
        loop.pipes.give(back: first)
        #expect(loop.census.pipesLent == 1 && loop.census.pipesIdle == 1)
        loop.pipes.discard(second)
        #expect(loop.census.pipesLent == 0 && loop.census.pipesIdle == 1)
    }
}
