import CLinuxShim
import Glibc

/// A stream socket descriptor (not owning: whoever created it closes it).
/// Each call wraps exactly one system call through `syscall`/`nonBlockingIO`.
public struct Socket: Hashable, Sendable {
    public let fd: Int32

    public init(fd: Int32) {
        self.fd = fd
    }

    /// Creates a non-blocking stream socket. With `mptcp`, asks for IPPROTO_MPTCP and falls
    /// back to plain TCP where the kernel refuses it (net.mptcp.enabled=0 gives ENOPROTOOPT).
    public static func makeStream(family: Int32, mptcp: Bool) throws(SystemError) -> (socket: Socket, isMPTCP: Bool) {
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if mptcp {
            let fd = Glibc.socket(family, type, MPX_IPPROTO_MPTCP)
            if fd >= 0 { return (Socket(fd: fd), true) }
            let error = Glibc.errno
            guard error == ENOPROTOOPT || error == EPROTONOSUPPORT || error == EINVAL else {
                throw SystemError("socket(IPPROTO_MPTCP)", errno: error)
            }
        }
        let fd = try syscall("socket(IPPROTO_TCP)") { Glibc.socket(family, type, Int32(IPPROTO_TCP)) }
        return (Socket(fd: fd), false)
    }

    public func close() {
        closeDescriptor(fd)
    }

    public func setOption(level: Int32, name: Int32, _ value: Int32, _ label: String) throws(SystemError) {
        var value = value
        try syscall("setsockopt(\(label))") { setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    public func intOption(level: Int32, name: Int32, _ label: String) throws(SystemError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        try syscall("getsockopt(\(label))") { getsockopt(fd, level, name, &value, &length) }
        return value
    }

    public func bind(to address: SocketAddress) throws(SystemError) {
        _ = try address.withSockAddr { (sa, len) throws(SystemError) in
            try syscall("bind(\(address))") { Glibc.bind(fd, sa, len) }
        }
    }

    /// Binds an outgoing socket to a local address before its connect, leaving the port to
    /// the connect (IP_BIND_ADDRESS_NO_PORT): bound this way a socket does not hold a port of
    /// its own, so many can share the address's port range with unbound ones.
    public func bindSource(_ address: IPAddress) throws(SystemError) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_IP), 24 /* IP_BIND_ADDRESS_NO_PORT */, &one, socklen_t(MemoryLayout<Int32>.size))
        try bind(to: SocketAddress(address, port: 0))
    }

    public func listen(backlog: Int32) throws(SystemError) {
        try syscall("listen") { Glibc.listen(fd, backlog) }
    }

    /// Starts a non-blocking connect. Returns true if already connected (or, with
    /// TCP_FASTOPEN_CONNECT, deferred until the first write), false if in progress.
    public func connect(to address: SocketAddress) throws(SystemError) -> Bool {
        try address.withSockAddr { (sa, len) throws(SystemError) -> Bool in
            while true {
                if Glibc.connect(fd, sa, len) == 0 { return true }
                let error = Glibc.errno
                if error == EINTR { continue }
                if error == EINPROGRESS { return false }
                throw SystemError("connect(\(address))", errno: error)
            }
        }
    }

    /// The deferred result of a non-blocking connect (SO_ERROR); 0 is success.
    public func pendingError() -> Int32 {
        (try? intOption(level: SOL_SOCKET, name: SO_ERROR, "SO_ERROR")) ?? EIO
    }

    /// The transport protocol of the socket: IPPROTO_MPTCP (262) or IPPROTO_TCP (6).
    /// A plain TCP client accepted by an MPTCP listener yields a TCP socket.
    public func transportProtocol() -> Int32 {
        (try? intOption(level: SOL_SOCKET, name: SO_PROTOCOL, "SO_PROTOCOL")) ?? 0
    }

    public func localAddress() -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        return ok ? SocketAddress(storage: storage) : nil
    }

    public func peerAddress() -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) == 0 }
        }
        return ok ? SocketAddress(storage: storage) : nil
    }

    /// Accepts one connection as a non-blocking socket, or nil when none is pending.
    public func accept() throws(SystemError) -> Socket? {
        switch try nonBlockingIO("accept4", { Int(mpx_accept_nonblocking(fd, nil, nil)) }) {
        case .processed(let newFD): return Socket(fd: Int32(newFD))
        case .wouldBlock: return nil
        }
    }

    /// Accepts one connection as a non-blocking socket with its peer's address, which accept4(2)
    /// fills in at no cost (a getpeername(2) after it is a system call per connection more).
    public func acceptWithPeer() throws(SystemError) -> (socket: Socket, peer: SocketAddress?)? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = self.fd
        let result = try withUnsafeMutablePointer(to: &storage) { (pointer) throws(SystemError) -> IOResult in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(SystemError) -> IOResult in
                try nonBlockingIO("accept4", { Int(mpx_accept_nonblocking(fd, address, &length)) })
            }
        }
        switch result {
        case .processed(let newFD): return (Socket(fd: Int32(newFD)), SocketAddress(storage: storage))
        case .wouldBlock: return nil
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, peek: Bool = false) throws(SystemError) -> IOResult {
        if peek { return try nonBlockingIO("recv(MSG_PEEK)", { Glibc.recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_PEEK)) }) }
        return try nonBlockingIO("read", { Glibc.read(fd, buffer.baseAddress, buffer.count) })
    }

    /// Reads into the start of `buffer` (at most its count); with `peek`, without consuming.
    public func read(into buffer: inout [UInt8], peek: Bool = false) throws(SystemError) -> IOResult {
        let fd = self.fd
        return try nonBlockingIO(peek ? "recv(MSG_PEEK)" : "read") {
            buffer.withUnsafeMutableBytes { raw in
                peek ? Glibc.recv(fd, raw.baseAddress, raw.count, Int32(MSG_PEEK)) : Glibc.read(fd, raw.baseAddress, raw.count)
            }
        }
    }

    /// Sends `buffer[offset...]`.
    public func send(_ buffer: [UInt8], from offset: Int) throws(SystemError) -> IOResult {
        let fd = self.fd
        return try nonBlockingIO("send") {
            buffer.withUnsafeBytes { all in
                let rest = UnsafeRawBufferPointer(rebasing: all[offset...])
                return Glibc.send(fd, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL))
            }
        }
    }

    /// Copies up to `buffer.count` queued bytes without consuming them (MSG_PEEK).
    public func peek(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult {
        try nonBlockingIO("recv(MSG_PEEK)", { Glibc.recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_PEEK)) })
    }

    public func send(_ buffer: UnsafeRawBufferPointer, flags: Int32 = 0) throws(SystemError) -> IOResult {
        try nonBlockingIO("send", { Glibc.send(fd, buffer.baseAddress, buffer.count, flags | Int32(MSG_NOSIGNAL)) })
    }

    public func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Makes the next close send a RST instead of a FIN: the peer sees "connection reset"
    /// or, before any data, a refused connection, never a silent hang.
    public func setLingerZero() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    public func setNoDelay() {
        try? setOption(level: Int32(IPPROTO_TCP), name: MPX_TCP_NODELAY, 1, "TCP_NODELAY")
    }

    /// The original destination of a connection redirected by nftables REDIRECT or DNAT (the
    /// conntrack entry's; IPv4 SO_ORIGINAL_DST, IPv6 IP6T_SO_ORIGINAL_DST, both 80). ENOENT
    /// when the connection was not translated (TPROXY, or not intercepted at all).
    public func originalDestination() throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let level = localAddress()?.family == AF_INET6 ? Int32(IPPROTO_IPV6) : Int32(SOL_IP)
        try syscall("getsockopt(SO_ORIGINAL_DST)") { getsockopt(fd, level, MPX_SO_ORIGINAL_DST, &storage, &length) }
        guard let address = SocketAddress(storage: storage) else { throw SystemError("SO_ORIGINAL_DST", errno: EAFNOSUPPORT) }
        return address
    }
}

public struct ListenerOptions: Sendable {
    public var mptcp: Bool
    public var reusePort: Bool
    /// TCP Fast Open queue length; 0 disables TFO on this listener.
    public var fastOpenQueue: Int32
    public var backlog: Int32
    /// IP_TRANSPARENT / IPV6_TRANSPARENT: accept connections TPROXY steers here for addresses
    /// that are not ours (the accepted socket's local address is then the original destination).
    public var transparent: Bool
    /// SO_RCVBUF for the accepted connections (they inherit it, locked, from the listener);
    /// 0 leaves the kernel's autotuning alone. On an MPTCP listener it bounds the data-level
    /// window the peer may fill, and with it the bytes queued ahead of a reinjection when a
    /// path dies (docs/decisions/0015).
    public var receiveBuffer: Int32

    public init(mptcp: Bool, reusePort: Bool = true, fastOpenQueue: Int32 = 0, backlog: Int32 = 4096, transparent: Bool = false,
                receiveBuffer: Int32 = 0) {
        self.receiveBuffer = receiveBuffer
        self.mptcp = mptcp
        self.reusePort = reusePort
        self.fastOpenQueue = fastOpenQueue
        self.backlog = backlog
        self.transparent = transparent
    }
}

extension Socket {
    /// A bound, listening, non-blocking socket. With `reusePort`, each event loop opens its own
    /// listener on the same address and the kernel spreads connections across them.
    public static func makeListener(at address: SocketAddress, options: ListenerOptions) throws(SystemError) -> (socket: Socket, isMPTCP: Bool) {
        let (socket, isMPTCP) = try makeStream(family: address.family, mptcp: options.mptcp)
        do {
            try socket.setOption(level: SOL_SOCKET, name: SO_REUSEADDR, 1, "SO_REUSEADDR")
            if options.reusePort {
                try socket.setOption(level: SOL_SOCKET, name: SO_REUSEPORT, 1, "SO_REUSEPORT")
            }
            if options.fastOpenQueue > 0 {
                // Best effort: a kernel without TFO on this socket type still serves normally.
                try? socket.setOption(level: Int32(IPPROTO_TCP), name: MPX_TCP_FASTOPEN, options.fastOpenQueue, "TCP_FASTOPEN")
            }
            if options.receiveBuffer > 0 {
                try socket.setOption(level: SOL_SOCKET, name: SO_RCVBUF, options.receiveBuffer, "SO_RCVBUF")
            }
            if options.transparent {
                if address.family == AF_INET6 {
                    try socket.setOption(level: Int32(IPPROTO_IPV6), name: MPX_IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT")
                } else {
                    try socket.setOption(level: Int32(SOL_IP), name: MPX_IP_TRANSPARENT, 1, "IP_TRANSPARENT")
                }
            }
            try socket.bind(to: address)
            try socket.listen(backlog: options.backlog)
        } catch {
            socket.close()
            throw error
        }
        return (socket, isMPTCP)
    }
}
