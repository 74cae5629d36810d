import Glibc

/// One event loop per core, each on its own thread, optionally inside a network namespace.
public final class LoopGroup: @unchecked Sendable {
    public let loops: [EventLoop]
    private var threads: [OSThread] = []

    public init(count: Int, name: String, namespace: NetworkNamespace? = nil, pipeSize: Int = 1 << 20) throws {
        precondition(count > 0)
        // splice(2) into a socket whose peer has gone raises SIGPIPE (it has no MSG_NOSIGNAL);
        // the relay handles EPIPE itself, so the signal must not kill the process.
        signal(SIGPIPE, SIG_IGN)
        if let namespace {
            // Fail here, with the reason, rather than on a loop thread later.
            try OSThread.run(in: namespace) {}
        }
        loops = try (0..<count).map { index throws(SystemError) in try EventLoop(index: index, pipeSize: pipeSize) }
        threads = loops.map { loop in
            OSThread(name: "\(name)-\(loop.index)", namespace: namespace) { loop.run() }
        }
    }

    /// Runs `body` on every loop's thread and waits for all of them.
    public func onEachLoop<T>(_ body: @escaping (EventLoop) throws -> T) throws -> [T] {
        let box = ResultsBox<T>(count: loops.count)
        for (index, loop) in loops.enumerated() {
            loop.execute {
                box.set(index, Result { try body(loop) })
            }
        }
        return try box.wait().map { try $0.get() }
    }

    /// Stops every loop and joins its thread.
    public func shutdown() {
        for loop in loops { loop.stop() }
        for thread in threads { thread.join() }
        threads.removeAll()
    }

    public static var coreCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// Hands results from other threads to one waiting thread: one slot per producer; `wait`
/// blocks the caller (never a loop thread) until every slot is filled.
public final class ResultsBox<T>: @unchecked Sendable {
    private var results: [Result<T, Error>?]
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()

    public init(count: Int) {
        results = Array(repeating: nil, count: count)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_mutex_destroy(&mutex)
        pthread_cond_destroy(&condition)
    }

    public func set(_ index: Int, _ result: Result<T, Error>) {
        pthread_mutex_lock(&mutex)
        results[index] = result
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    public func wait() -> [Result<T, Error>] {
        pthread_mutex_lock(&mutex)
        while results.contains(where: { $0 == nil }) {
            pthread_cond_wait(&condition, &mutex)
        }
        let done = results.map { $0! }
        pthread_mutex_unlock(&mutex)
        return done
    }
}
