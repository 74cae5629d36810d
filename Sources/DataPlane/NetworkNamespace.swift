import CLinuxShim
import Glibc

/// A named network namespace (`ip netns add NAME` → /var/run/netns/NAME).
/// setns(2) changes only the calling thread, so the proxy's loop threads (and test traffic
/// threads) can each live in their own namespace inside one process; sockets keep the
/// namespace they were created in.
public struct NetworkNamespace: Sendable, Equatable, CustomStringConvertible {
    public let name: String

    public init(_ name: String) {
        self.name = name
    }

    public var path: String { "/var/run/netns/\(name)" }

    public var description: String { name }

    /// Moves the calling thread into the namespace. Never call this on a thread you do not own.
    public func enterOnCurrentThread() throws(SystemError) {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { closeDescriptor(fd) }
        try syscall("setns(\(name))") { mpx_setns_net(fd) }
    }
}

/// A joinable OS thread running a closure (optionally inside a network namespace).
public final class OSThread: @unchecked Sendable {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var thread = pthread_t()
    private var joined = false
    /// Set when the thread could not enter its namespace; its body then never ran.
    public private(set) var namespaceError: SystemError?

    /// Starts `body` on a new thread, entering `namespace` first if given. The thread carries
    /// `name` (its first 15 bytes, the kernel's limit) where `top -H`, `ps -L` and perf show it.
    public init(name: String, namespace: NetworkNamespace? = nil, _ body: @escaping () -> Void) {
        let box = Box { [unowned self] in
            _ = mpx_set_thread_name(name)  // the kernel keeps the first 15 bytes
            if let namespace {
                do {
                    try namespace.enterOnCurrentThread()
                } catch {
                    // Never run the body in the wrong namespace.
                    self.namespaceError = (error as? SystemError) ?? SystemError("setns", errno: EIO)
                    return
                }
            }
            body()
        }
        let argument = Unmanaged.passRetained(box).toOpaque()
        let result = pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, argument)
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }

    /// Runs `body` on a thread in `namespace` and waits for its result.
    public static func run<T>(in namespace: NetworkNamespace?, _ body: @escaping () throws -> T) throws -> T {
        var result: Result<T, Error>!
        let thread = OSThread(name: "netns-call", namespace: namespace) {
            result = Result { try body() }
        }
        thread.join()
        if let error = thread.namespaceError { throw error }
        return try result.get()
    }
}
