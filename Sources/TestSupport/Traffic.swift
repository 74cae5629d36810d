import Crypto
import DataPlane
import Foundation
import Glibc
import ProxyProtocols

/// Deterministic bytes: both ends of a transfer generate the same stream from a seed, so the
/// receiver can check every byte without the sender shipping a copy.
public struct PatternStream {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    }

    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var index = 0
        while index < buffer.count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            var word = state
            let n = min(8, buffer.count - index)
            withUnsafeBytes(of: &word) { bytes in
                for i in 0..<n { buffer[index + i] = bytes[i] }
            }
            index += n
        }
    }

    /// Writes the next `count` bytes of the stream to a blocking socket; `written` sees each chunk.
    public mutating func write(count: Int, to fd: Int32, written: (UnsafeRawBufferPointer) -> Void = { _ in }) throws {
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var remaining = count
        while remaining > 0 {
            let n = min(remaining, buffer.count)
            try buffer.withUnsafeMutableBytes { raw in
                let chunk = UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])
                fill(chunk)
                try BlockingSocket.writeAll(fd, UnsafeRawBufferPointer(chunk))
                written(UnsafeRawBufferPointer(chunk))
            }
            remaining -= n
        }
    }

    /// SHA-256 of the first `count` bytes of the stream for `seed`.
    public static func digest(seed: UInt64, count: Int) -> [UInt8] {
        var stream = PatternStream(seed: seed)
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var remaining = count
        while remaining > 0 {
            let n = min(remaining, buffer.count)
            buffer.withUnsafeMutableBytes { stream.fill(UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            hasher.update(data: buffer[0..<n])
            remaining -= n
        }
        return Array(hasher.finalize())
    }
}

public struct TrafficError: Error, CustomStringConvertible {
    public var description: String
    /// The bytes arrived, but not the bytes sent (a digest differs): a data-integrity failure,
    /// which a test reports with the kernel's state, unlike a timeout or a reset.
    public var isCorruption: Bool
    public init(_ description: String, isCorruption: Bool = false) {
        self.description = description
        self.isCorruption = isCorruption
    }
}

/// Blocking socket helpers for test traffic, on threads inside testbed namespaces.
extension BlockingSocket {
    public static func listen(on address: SocketAddress, mptcp: Bool = false) throws -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), mptcp ? 262 : 0)
        guard fd >= 0 else { throw SystemError("socket", errno: errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard address.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
            let error = errno
            close(fd)
            throw SystemError("bind(\(address))", errno: error)
        }
        guard Glibc.listen(fd, 1024) == 0 else { throw SystemError("listen", errno: errno) }
        return fd
    }

    /// Reads exactly `count` bytes (or throws on EOF first).
    public static func readExactly(_ fd: Int32, _ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("recv", errno: errno)
            }
            if n == 0 { throw TrafficError("EOF after \(offset) of \(count) bytes") }
            offset += n
        }
        return out
    }
}

/// The result of one checked transfer through the proxy chain.
public struct TransferResult: Sendable {
    public var uploaded: Int
    public var downloaded: Int
    public var uploadSeconds: Double
    public var downloadSeconds: Double
    /// Longest time between two reads that returned data (the download direction).
    public var longestReadGapMilliseconds: Double
    /// The same, measured by the origin while it read the upload.
    public var longestUploadGapMilliseconds: Double
}

/// The origin side of checked transfers ("hash service"): for each connection it reads a
/// 16-byte header (download length, seed), then the upload until EOF while hashing it, then
/// sends the upload's SHA-256, the longest gap between its reads (8 bytes, µs) and
/// `download length` pattern bytes, then closes. The client
/// checks both, so every byte in both directions is verified, and the upload only ends with a
/// half-close: a proxy that loses half-close fails this.
public final class HashServer: @unchecked Sendable {
    private let listenFD: Int32
    private var acceptThread: OSThread?
    private let lock = NSLock()
    private var workers: [OSThread] = []
    private var stopped = false
    private var headers: [ProxyProtocolV2.Header] = []
    private let readsProxyHeader: Bool
    public private(set) var connections = 0
    /// Where it listens (the kernel's port when asked for port 0).
    public let address: SocketAddress

    /// - Parameter proxyHeader: every connection starts with a PROXY v2 header (kept in `proxyHeaders`).
    public init(namespace: NetworkNamespace?, address: SocketAddress, mptcp: Bool = false, proxyHeader: Bool = false) throws {
        let fd = try OSThread.run(in: namespace) { try BlockingSocket.listen(on: address, mptcp: mptcp) }
        listenFD = fd
        self.address = Socket(fd: fd).localAddress() ?? address
        readsProxyHeader = proxyHeader
        acceptThread = OSThread(name: "hash-accept") { [self] in acceptLoop() }
    }

    /// The PROXY v2 headers received so far, in order.
    public var proxyHeaders: [ProxyProtocolV2.Header] {
        lock.lock()
        defer { lock.unlock() }
        return headers
    }

    public var connectionCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return connections
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // listener closed by stop()
            }
            lock.lock()
            if stopped { lock.unlock(); close(fd); return }
            connections += 1
            let proxyHeader = readsProxyHeader
            workers.append(OSThread(name: "hash-conn") { [self] in
                if proxyHeader {
                    // The signature, version and length, then the addresses.
                    guard let head = try? BlockingSocket.readExactly(fd, 16) else { close(fd); return }
                    let rest = Int(head[14]) << 8 | Int(head[15])
                    guard rest <= 216, let body = try? BlockingSocket.readExactly(fd, rest),
                          let (header, _) = try? ProxyProtocolV2.decode(head + body) else { close(fd); return }
                    lock.lock()
                    headers.append(header)
                    lock.unlock()
                }
                HashServer.serve(fd)
            })
            lock.unlock()
        }
    }

    /// A download length with this bit set asks the origin to reset the connection as soon as
    /// it has read the header, while the client is still uploading.
    public static let resetRequest = 1 << 62

    static func serve(_ fd: Int32) {
        defer { close(fd) }
        var tv = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let header = try? BlockingSocket.readExactly(fd, 16) else { return }
        let downloadLength = header[0..<8].reduce(0) { $0 << 8 | Int($1) }
        let seed = header[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if downloadLength & resetRequest != 0 {
            // An origin failing mid-way, on request (the soak test): RST while the upload flows.
            var hard = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
            return
        }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var lastRead: UInt64 = 0
        var longestGap: UInt64 = 0
        // Small uploads are kept, so a corrupted one can be located (see reportDivergence).
        let diagnosisLimit = 256 * 1024
        var received: [UInt8] = []
        var receivedCount = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { if n < 0 { return }; break }
            let now = monotonicMicroseconds()
            if lastRead != 0 { longestGap = max(longestGap, now - lastRead) }
            lastRead = now
            hasher.update(data: buffer[0..<n])
            if received.count < diagnosisLimit { received += buffer[0..<min(n, diagnosisLimit - received.count)] }
            receivedCount += n
        }
        if receivedCount <= diagnosisLimit { reportDivergence(received, seed: seed) }
        // Reply: SHA-256 of the upload, then the longest gap between its reads (µs, 8 bytes).
        let digest = Array(hasher.finalize()) + (0..<8).map { UInt8(truncatingIfNeeded: longestGap >> UInt64(56 - 8 * $0)) }
        do {
            try digest.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
            var stream = PatternStream(seed: seed &+ 1)
            try stream.write(count: downloadLength, to: fd)
        } catch {
            return
        }
    }

    /// Compares an upload with the pattern its client sent (the writer fills 256 KiB chunks,
    /// so one fill reproduces an upload up to that size) and prints where it first differs:
    /// the SHA-256 check says *that* bytes changed, this says where and how.
    static func reportDivergence(_ received: [UInt8], seed: UInt64) {
        var expected = [UInt8](repeating: 0, count: received.count)
        var stream = PatternStream(seed: seed)
        expected.withUnsafeMutableBytes { stream.fill($0) }
        guard let offset = received.indices.first(where: { received[$0] != expected[$0] }) else { return }
        let lastBad = received.indices.last(where: { received[$0] != expected[$0] }) ?? offset
        // Where did the bytes at the divergence come from? Look for them in the expected stream.
        let probe = Array(received[offset..<min(offset + 16, received.count)])
        var foundAt: Int?
        if probe.count == 16 {
            for start in 0...(expected.count - 16) where expected[start] == probe[0] && Array(expected[start..<start + 16]) == probe {
                foundAt = start
                break
            }
        }
        print("hash-server: upload of \(received.count) bytes (seed \(seed)) differs from offset \(offset) to \(lastBad); "
              + "the bytes at \(offset) are \(foundAt.map { "the pattern's bytes at \($0)" } ?? "not from this stream")")
    }

    public func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        acceptThread?.join()
        lock.lock()
        let all = workers
        lock.unlock()
        all.forEach { $0.join() }
    }

    /// One checked transfer: upload `upload` pattern bytes, half-close, then read and verify
    /// the digest of the upload and `download` pattern bytes.
    public static func transfer(to address: SocketAddress, upload: Int, download: Int, seed: UInt64,
                                timeoutSeconds: Int = 60, from source: IPAddress? = nil,
                                prelude: (Int32) throws -> Void = { _ in }) throws -> TransferResult {
        let fd = try BlockingSocket.connect(to: address, timeoutSeconds: timeoutSeconds, from: source)
        defer { close(fd) }
        // A proxy protocol's handshake (SOCKS5, HTTP CONNECT) before the checked stream.
        try prelude(fd)
        var header = [UInt8](repeating: 0, count: 16)
        for i in 0..<8 {
            header[i] = UInt8(truncatingIfNeeded: UInt64(download) >> UInt64(56 - 8 * i))
            header[8 + i] = UInt8(truncatingIfNeeded: seed >> UInt64(56 - 8 * i))
        }
        let started = Date()
        try header.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
        var stream = PatternStream(seed: seed)
        var hasher = SHA256()
        try stream.write(count: upload, to: fd) { hasher.update(data: $0) }
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        // Half-close: the reply must still arrive in full.
        shutdown(fd, Int32(SHUT_WR))
        let reply = try BlockingSocket.readExactly(fd, 40)
        let echoed = Array(reply[0..<32])
        let uploadGap = Double(reply[32..<40].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }) / 1000
        let uploadSeconds = Date().timeIntervalSince(started)
        guard echoed == Array(hasher.finalize()) else {
            throw TrafficError("upload of \(upload) bytes arrived corrupted: SHA-256 differs at the origin", isCorruption: true)
        }
        let downloadStarted = Date()
        var downloadHasher = SHA256()
        var received = 0
        var lastRead = Date()
        var longestGap = 0.0
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("recv after \(received) of \(download) download bytes", errno: errno)
            }
            if n == 0 { break }
            let now = Date()
            if received > 0 { longestGap = max(longestGap, now.timeIntervalSince(lastRead) * 1000) }
            lastRead = now
            downloadHasher.update(data: buffer[0..<n])
            received += n
        }
        guard received == download else {
            throw TrafficError("download ended after \(received) of \(download) bytes")
        }
        guard Array(downloadHasher.finalize()) == PatternStream.digest(seed: seed &+ 1, count: download) else {
            throw TrafficError("download of \(download) bytes arrived corrupted: SHA-256 differs", isCorruption: true)
        }
        return TransferResult(uploaded: upload, downloaded: download, uploadSeconds: uploadSeconds,
                              downloadSeconds: Date().timeIntervalSince(downloadStarted), longestReadGapMilliseconds: longestGap,
                              longestUploadGapMilliseconds: uploadGap)
    }
}

/// "0a01ff" → [0x0a, 0x01, 0xff]: kernel bytes recorded as hex in test fixtures.
public func bytes(hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        out.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return out
}
