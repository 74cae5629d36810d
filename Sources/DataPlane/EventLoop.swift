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
/// Entries for replaced deadlines stay in the heap and are skipped when they come due.
public final class LoopTimer {
    fileprivate(set) public var deadline: UInt64 = 0
    private let action: () -> Void

    public init(_ action: @escaping () -> Void) {
        self.action = action
    }

    public var isArmed: Bool { deadline != 0 }

    public func cancel() { deadline = 0 }

    fileprivate func fire(dueAt due: UInt64) {
        guard deadline == due else { return }
        deadline = 0
        action()
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
    private let epollFD: Int32
    private let wakeFD: Int32
    private var registrations: [Int32: Registration] = [:]
    private var nextToken: UInt32 = 1
    private var timers = Heap<TimerEntry>()
    private var timerSequence: UInt64 = 0
    private let tasks = Mutex<[() -> Void]>([])
    private let stopRequested = Atomic<Bool>(false)
    /// Cached at each wakeup: handlers read it instead of calling clock_gettime per event.
    public private(set) var now: UInt64

    public init(index: Int, pipeSize: Int = 1 << 20) throws(SystemError) {
        self.index = index
        self.pipes = PipePool(pipeSize: pipeSize)
        epollFD = try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        do {
            wakeFD = try syscall("eventfd") { eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC)) }
        } catch {
            closeDescriptor(epollFD)
            throw error
        }
        now = monotonicMilliseconds()
        var event = epoll_event(events: MPX_EPOLLIN, data: epoll_data_t(u64: 0))
        _ = epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
    }

    deinit {
        pipes.drain()
        closeDescriptor(wakeFD)
        closeDescriptor(epollFD)
    }

    /// Edge-triggered interest in readability, writability and peer half-close.
    public static let streamEvents: UInt32 = MPX_EPOLLIN | MPX_EPOLLOUT | MPX_EPOLLRDHUP | MPX_EPOLLET
    public static let readEvents: UInt32 = MPX_EPOLLIN | MPX_EPOLLET

    public func register(_ fd: Int32, events: UInt32, handler: EventHandler) throws(SystemError) {
        let token = nextToken
        nextToken = nextToken &+ 1 == 0 ? 1 : nextToken &+ 1
        var event = epoll_event(events: events, data: epoll_data_t(u64: UInt64(token) << 32 | UInt64(UInt32(bitPattern: fd))))
        try syscall("epoll_ctl(ADD)") { epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) }
        registrations[fd] = Registration(token: token, handler: handler)
    }

    /// Forgets `fd`; call before closing it. Events already fetched for it are dropped.
    public func deregister(_ fd: Int32) {
        guard registrations.removeValue(forKey: fd) != nil else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
    }

    public var registeredCount: Int { registrations.count }

    /// Arms `timer` to fire `milliseconds` from the loop's current time.
    public func arm(_ timer: LoopTimer, after milliseconds: UInt64) {
        arm(timer, at: now + milliseconds)
    }

    public func arm(_ timer: LoopTimer, at deadline: UInt64) {
        timer.deadline = max(deadline, 1)
        timerSequence += 1
        timers.insert(TimerEntry(deadline: timer.deadline, sequence: timerSequence, timer: timer))
    }

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
                    guard let registration = registrations[fd], registration.token == token else { continue }
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
