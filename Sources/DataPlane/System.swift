import CLinuxShim
import Glibc

/// A failed system call: its name and errno.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    public var call: String
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// The outcome of a non-blocking I/O call: bytes moved, or "try again when ready".
public enum IOResult: Equatable, Sendable {
    case processed(Int)
    case wouldBlock
}

/// Runs a system call, retrying EINTR, and throws errno with the call's name.
/// Every call in DataPlane goes through here or through `nonBlockingIO` below.
@inline(__always)
@discardableResult
public func syscall<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let result = body()
        if result == -1 {
            let error = Glibc.errno
            if error == EINTR { continue }
            throw SystemError(name(), errno: error)
        }
        return result
    }
}

/// Like `syscall`, for non-blocking I/O: EAGAIN becomes `.wouldBlock` instead of an error.
@inline(__always)
public func nonBlockingIO(_ name: @autoclosure () -> String, _ body: () -> Int) throws(SystemError) -> IOResult {
    while true {
        let result = body()
        if result >= 0 { return .processed(result) }
        let error = Glibc.errno
        if error == EINTR { continue }
        if error == EAGAIN || error == EWOULDBLOCK { return .wouldBlock }
        throw SystemError(name(), errno: error)
    }
}

/// close(2), never retried (Linux releases the descriptor even when close reports EINTR).
public func closeDescriptor(_ fd: Int32) {
    _ = Glibc.close(fd)
}

/// Monotonic milliseconds, for deadlines.
public func monotonicMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// Monotonic microseconds, for rates and gaps measured finer than deadlines need.
public func monotonicMicroseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
}

/// Wall-clock seconds since the Unix epoch.
public func unixSeconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec)
}

/// Wall-clock milliseconds since the Unix epoch, for cookie timestamps.
public func unixMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// Raises the soft open-file limit to the hard limit (connection-heavy processes need it).
@discardableResult
public func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return UInt64(limit.rlim_cur)
}

/// `count` bytes from the kernel's random generator (getrandom(2), one call for up to 256
/// bytes), or nil if it could not fill them (a pool not yet initialised at early boot blocks
/// instead, so in practice never).
public func kernelRandomBytes(_ count: Int) -> [UInt8]? {
    var bytes = [UInt8](repeating: 0, count: count)
    let filled = bytes.withUnsafeMutableBytes { mpx_getrandom($0.baseAddress, UInt($0.count)) }
    return filled == count ? bytes : nil
}
