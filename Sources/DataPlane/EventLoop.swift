import CLinuxShim
import Glibc
import HeapModule
import Synchronization

/// Something that owns descriptors registered with an event loop.
public protocol EventHandler: AnyObject {
    /// Called on the loop's thread with the epoll event bits for `fd`.
    func handleEvents(_ events: UInt32, fd: Int32)
}

/// A one-shot deadline on a loop. Re-arming replaces the old deadline; `cancel` disarms it.
/// Entries for replaced deadlines stay in the loop's heap and are skipped when they come due,
/// or dropped sooner when they outnumber the live ones (see `EventLoop.arm`).
public final class LoopTimer {
    fileprivate(set) public var deadline: UInt64 = 0
    /// Dropped by `invalidate`, with whatever it captured.
    private var action: (() -> Void)?
    /// The loop it is armed on, which counts its armed timers (stale heap entries aside).
    fileprivate weak var loop: EventLoop?

    public init(_ action: @escaping () -> Void) {
        self.action = action
    }

    public var isArmed: Bool { deadline != 0 }

    public func cancel() {
        guard deadline != 0 else { return }
        deadline = 0
        loop?.timerDisarmed()
    }

    /// Cancels for good and releases the action: a cancelled timer's entry stays in the loop's
    /// heap until its deadline or the next compaction, and without this it would keep what the
    /// action captured (a closed connection) alive as long. An invalidated timer never fires.
    public func invalidate() {
        cancel()
        action = nil
    }

    fileprivate func fire(dueAt due: UInt64) {
        guard deadline == due else { return }
        deadline = 0
        loop?.timerDisarmed()
        action?()
    }
}

/// One epoll reactor on one thread: edge-triggered descriptors, timers, and tasks posted from
/// other threads through an eventfd. Everything registered with it is touched only on its thread.
public final class EventLoop: @unchecked Sendable {
    private struct Registration {
        var token: UInt32
        var handler: EventHandler
    }

    private struct TimerEntry: Comparable {
        var deadline: UInt64
        var sequence: UInt64
        var timer: LoopTimer
        static func < (a: TimerEntry, b: TimerEntry) -> Bool {
            (a.deadline, a.sequence) < (b.deadline, b.sequence)
        }
        static func == (a: TimerEntry, b: TimerEntry) -> Bool {
            a.deadline == b.deadline && a.sequence == b.sequence
        }
    }

    public let index: Int
    public let pipes: PipePool
    /// Pipes and timers this loop holds, for `/metrics`.
    public let census: LoopCensus
    /// The relays' copy buffer (SpliceDirection): a copied read is written out before the
    /// relay returns, so one buffer per loop serves all its connections.
    public let copyBuffer: UnsafeMutableRawBufferPointer
    public static let copyBufferSize = 16 << 10
    private let epollFD: Int32
    private let wakeFD: Int32
    /// Indexed by descriptor (the kernel hands out the lowest free one, so the table stays as
    /// small as the most descriptors open at once): one array access per event, no hashing.
    private var registrations: [Registration?] = []
    public private(set) var registeredCount = 0
    private var nextToken: UInt32 = 1
    private var timers = Heap<TimerEntry>()
    private var timerSequence: UInt64 = 0
    /// Timers armed now (the heap also holds stale entries of cancelled and re-armed ones).
    private var armedTimers = 0
    private var timerCompactionSize = EventLoop.minimumTimerCompactionSize
    private let tasks = Mutex<[() -> Void]>([])
    private let stopRequested = Atomic<Bool>(false)
    /// Cached at each wakeup: handlers read it instead of calling clock_gettime per event.
    public private(set) var now: UInt64
    /// Counts the loop's turns (one epoll_wait each), so a handler can tell whether it was
    /// reported in consecutive turns (a listener whose backlog holds more than it took).
    public private(set) var turn: UInt64 = 0

    public init(index: Int, pipeSize: Int = 1 << 20) throws(SystemError) {
        self.index = index
        let census = LoopCensus()
        self.census = census
        self.pipes = PipePool(pipeSize: pipeSize, census: census)
        epollFD = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        do {
            wakeFD = try syscall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC)) }
        } catch {
            closeDescriptor(epollFD)
            throw error
        }
        copyBuffer = .allocate(byteCount: Self.copyBufferSize, alignment: 64)
        now = monotonicMilliseconds()
        var event = epoll_event(events: MPX_EPOLLIN, data: epoll_data_t(u64: 0))
        _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
    }

    deinit {
        copyBuffer.deallocate()
        pipes.drain()
        closeDescriptor(wakeFD)
        closeDescriptor(epollFD)
    }

    /// Edge-triggered interest in readability, writability and peer half-close.
    public static let streamEvents: UInt32 = MPX_EPOLLIN | MPX_EPOLLOUT | MPX_EPOLLRDHUP | MPX_EPOLLET
    /// `streamEvents` without writability, for a socket that is not waiting to write. An MPTCP
    /// socket wakes its waiters with EPOLLOUT on every ACK that frees send space, so a socket
    /// watched for EPOLLOUT while it has room costs a wakeup per acknowledged write (measured:
    /// one of the gateway's six and two of the server's five wakeups per B3 connection).
    public static let streamEventsWithoutWrite: UInt32 = MPX_EPOLLIN | MPX_EPOLLRDHUP | MPX_EPOLLET
    public static let readEvents: UInt32 = MPX_EPOLLIN | MPX_EPOLLET
    /// Level-triggered readability: reported for as long as something is there to read
    /// (listeners: a handler may take a few connections per event and leave the rest queued).
    public static let levelReadEvents: UInt32 = MPX_EPOLLIN

    public func register(_ fd: Int32, events: UInt32, handler: EventHandler) throws(SystemError) {
        let token = nextToken
        nextToken = nextToken &+ 1 == 0 ? 1 : nextToken &+ 1
        var event = epoll_event(events: events, data: epoll_data_t(u64: UInt64(token) << 32 | UInt64(UInt32(bitPattern: fd))))
        try syscall("epoll_ctl(ADD)") { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) }
        let index = Int(fd)
        if index >= registrations.count {
            registrations.append(contentsOf: repeatElement(nil, count: max(index + 1, registrations.count * 2) - registrations.count))
        }
        if registrations[index] == nil { registeredCount += 1 }
        registrations[index] = Registration(token: token, handler: handler)
    }

    /// Changes the events `fd` is watched for, keeping its registration (and token). epoll
    /// checks readiness as it modifies, so an edge that came before the change is reported.
    public func modify(_ fd: Int32, events: UInt32) throws(SystemError) {
        guard let registration = registration(fd) else {
            throw SystemError("epoll_ctl(MOD) of an unregistered descriptor", errno: EBADF)
        }
        var event = epoll_event(events: events, data: epoll_data_t(u64: UInt64(registration.token) << 32 | UInt64(UInt32(bitPattern: fd))))
        try syscall("epoll_ctl(MOD)") { epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event) }
    }

    /// Forgets `fd`; call before closing it. Events already fetched for it are dropped.
    public func deregister(_ fd: Int32) {
        guard remove(fd) else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
    }

    /// Forgets `fd` without telling epoll: for a descriptor about to be closed, which close(2)
    /// removes from the epoll set (only when it was never duplicated). Events already fetched for
    /// it are dropped by the token check.
    public func forget(_ fd: Int32) {
        _ = remove(fd)
    }

    private func remove(_ fd: Int32) -> Bool {
        let index = Int(fd)
        guard index >= 0, index < registrations.count, registrations[index] != nil else { return false }
        registrations[index] = nil
        registeredCount -= 1
        return true
    }

    private func registration(_ fd: Int32) -> Registration? {
        let index = Int(fd)
        return index >= 0 && index < registrations.count ? registrations[index] : nil
    }

    /// Arms `timer` to fire `milliseconds` from the loop's current time.
    public func arm(_ timer: LoopTimer, after milliseconds: UInt64) {
        arm(timer, at: now + milliseconds)
    }

    public func arm(_ timer: LoopTimer, at deadline: UInt64) {
        if !timer.isArmed {
            armedTimers += 1
            census.recordTimers(armedTimers)
        }
        timer.loop = self
        timer.deadline = max(deadline, 1)
        timerSequence += 1
        timers.insert(TimerEntry(deadline: timer.deadline, sequence: timerSequence, timer: timer))
        if timers.count >= timerCompactionSize { compactTimers() }
    }

    fileprivate func timerDisarmed() {
        armedTimers -= 1
        census.recordTimers(armedTimers)
    }

    /// A connection arms a handshake and an idle deadline of seconds to hours and usually ends
    /// long before them: left in the heap, each entry (and its timer, and what that captures)
    /// would live until its deadline, so memory would grow with connection rate × timeout.
    /// So whenever the heap has doubled since it was last compacted, it is rebuilt with only
    /// the entries still armed: O(n) work once per n insertions, O(1) per arm.
    private func compactTimers() {
        let live = timers.unordered.filter { $0.timer.deadline == $0.deadline }
        timers = Heap(live)
        timerCompactionSize = max(Self.minimumTimerCompactionSize, 2 * live.count)
    }

    private static let minimumTimerCompactionSize = 1024

    /// Entries the heap holds, live or stale (for tests).
    public var timerEntryCount: Int { timers.count }

    /// Runs `task` on the loop's thread. Safe from any thread.
    public func execute(_ task: @escaping () -> Void) {
        tasks.withLock { $0.append(task) }
        wake()
    }

    /// Makes `run` return after the current iteration. Safe from any thread.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// The loop. Returns after `stop()`.
    public func run() {
        let capacity = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while !stopRequested.load(ordering: .acquiring) {
            let timeout: Int32
            if let next = timers.min {
                let current = monotonicMilliseconds()
                timeout = next.deadline <= current ? 0 : Int32(min(next.deadline - current, 60_000))
            } else {
                timeout = -1
            }
            let count = epoll_wait(epollFD, events, Int32(capacity), timeout)
            now = monotonicMilliseconds()
            turn &+= 1
            if count > 0 {
                for i in 0..<Int(count) {
                    let data = events[i].data.u64
                    if data == 0 {
                        var value: UInt64 = 0
                        _ = Glibc.read(wakeFD, &value, 8)
                        continue
                    }
                    let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
                    let token = UInt32(truncatingIfNeeded: data >> 32)
                    guard let registration = registration(fd), registration.token == token else { continue }
                    registration.handler.handleEvents(events[i].events, fd: fd)
                }
            }
            runTasks()
            fireTimers()
        }
    }

    private func runTasks() {
        let pending = tasks.withLock { tasks -> [() -> Void] in
            let taken = tasks
            tasks.removeAll()
            return taken
        }
        for task in pending { task() }
    }

    private func fireTimers() {
        while let next = timers.min, next.deadline <= now {
            let entry = timers.removeMin()
            entry.timer.fire(dueAt: entry.deadline)
        }
    }
}
