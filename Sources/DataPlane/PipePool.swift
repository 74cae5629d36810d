import CLinuxShim
import Glibc

/// A kernel pipe used as the splice buffer of one relay direction.
public struct Pipe {
    public let readFD: Int32
    public let writeFD: Int32
    public let capacity: Int
}

/// Pipes of one event loop, lent to relay directions only while bytes are in flight, so an
/// idle connection holds none. Pipes are sized with F_SETPIPE_SZ: large chunks per splice
/// keep the relay's CPU cost per byte low.
public final class PipePool {
    public let pipeSize: Int
    public let maximumIdle: Int
    /// Most pipes lent at once: with the pipe size, a bound on the memory relays can pin in
    /// pipes on this loop. Past it (or when the kernel has no descriptors or memory for one),
    /// `take` fails with EAGAIN-like errors and relays wait for a pipe instead of failing.
    public var maximumLent: Int
    private var idle: [Pipe] = [] { didSet { census?.recordPipes(lent: lent, idle: idle.count) } }
    public private(set) var lent = 0 { didSet { census?.recordPipes(lent: lent, idle: idle.count) } }
    private let census: LoopCensus?

    public init(pipeSize: Int, maximumIdle: Int = 64, maximumLent: Int = .max, census: LoopCensus? = nil) {
        self.pipeSize = pipeSize
        self.maximumIdle = maximumIdle
        self.maximumLent = maximumLent
        self.census = census
    }

    /// Whether a failed `take` means "no pipe now, try later" rather than a broken relay.
    public static func isShortage(_ error: SystemError) -> Bool {
        [EMFILE, ENFILE, ENOMEM, ENOBUFS, EAGAIN].contains(error.errno)
    }

    public func take() throws(SystemError) -> Pipe {
        guard lent < maximumLent else { throw SystemError("pipe (\(lent) of \(maximumLent) lent)", errno: EAGAIN) }
        lent += 1
        if let pipe = idle.popLast() { return pipe }
        var fds: [Int32] = [0, 0]
        do {
            try syscall("pipe2") { mpx_pipe_nonblocking(&fds) }
        } catch {
            lent -= 1
            throw error
        }
        // The kernel may refuse a large size (pipe-user-pages limits); the default still works.
        let granted = mpx_pipe_set_size(fds[1], Int32(pipeSize))
        let capacity = granted > 0 ? Int(granted) : 65536
        return Pipe(readFD: fds[0], writeFD: fds[1], capacity: capacity)
    }

    /// Returns an empty pipe. A pipe that still holds bytes must be `discard`ed instead.
    public func give(back pipe: Pipe) {
        lent -= 1
        if idle.count < maximumIdle {
            idle.append(pipe)
        } else {
            closeDescriptor(pipe.readFD)
            closeDescriptor(pipe.writeFD)
        }
    }

    public func discard(_ pipe: Pipe) {
        lent -= 1
        closeDescriptor(pipe.readFD)
        closeDescriptor(pipe.writeFD)
    }

    public var idleCount: Int { idle.count }

    func drain() {
        for pipe in idle {
            closeDescriptor(pipe.readFD)
            closeDescriptor(pipe.writeFD)
        }
        idle.removeAll()
    }
}
