import CLinuxShim
import Glibc

/// Blocking client-socket calls with send/receive deadlines, for the few places that talk to a
/// peer outside the event loops: tests and benchmarks, and mptcp-stats fetching a proxy's
/// /metrics.
public enum BlockingSocket {
    /// A connected TCP socket whose sends and receives give up after `timeoutSeconds`.
    /// A connected TCP socket whose sends and receives give up after `timeoutSeconds`, from
    /// `source` when given (e.g. another loopback address).
    public static func connect(to address: SocketAddress, timeoutSeconds: Int = 10, from source: IPAddress? = nil,
                               mptcp: Bool = false) throws(SystemError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), mptcp ? MPX_IPPROTO_MPTCP : 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        if let source {
            let local = SocketAddress(source, port: 0)
            guard local.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
                let error = errno
                close(fd)
                throw SystemError("bind(\(source))", errno: error)
            }
        }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if result != 0 {
            let error = errno
            close(fd)
            throw SystemError("connect(\(address))", errno: error)
        }
        return fd
    }

    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        var offset = 0
        while offset < buffer.count {
            let n = send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("send", errno: errno)
            }
            offset += n
        }
    }
}
