import Glibc

/// A stream socket whose descriptor this object owns: `close` releases it exactly once (a
/// second call does nothing, so a descriptor number the kernel has reused for another socket
/// is never closed by mistake), and a socket dropped without `close` is closed by `deinit`.
/// `socket` is the non-owning view the relay and the system-call wrappers work on.
public final class OwnedSocket {
    public let socket: Socket
    public private(set) var isOpen = true

    public init(_ socket: Socket) {
        self.socket = socket
    }

    public var fd: Int32 { socket.fd }

    /// Closes the descriptor; with `reset`, with SO_LINGER 0 so the peer gets a RST.
    public func close(reset: Bool = false) {
        guard isOpen else { return }
        isOpen = false
        if reset { socket.setLingerZero() }
        socket.close()
    }

    deinit {
        if isOpen { socket.close() }
    }
}
