import ConvertProtocol
import DataPlane
import Glibc
import Logging
@testable import Proxy

import Testing

/// A live server on loopback fed bad input over real sockets: each case must get the right
/// Error TLV (or a close) within the handshake deadline, and never reach a destination.
final class BadInputHarness {
    let key = ClientKey(id: "gw", secret: Array(repeating: 5, count: 32))
    let server: ProxyServer
    let address: SocketAddress
    let records: RecordCollector
    /// A loopback "origin" that counts connections: nothing unauthenticated may reach it.
    let origin: Int32
    let originAddress: SocketAddress

    init(idleTimeout: UInt64 = 5_000) throws {
        signal(SIGPIPE, SIG_IGN)
        let originFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let any = try SocketAddress(parsing: "127.0.0.1:1")
        var zero = SocketAddress(any.address, port: 0)
        _ = zero.withSockAddr { bind(originFD, $0, $1) }
        Glibc.listen(originFD, 16)
        origin = originFD
        originAddress = Socket(fd: originFD).localAddress()!
        zero = SocketAddress(any.address, port: 0)
        var configuration = ServerConfiguration(listen: [zero], keys: [ClientKey(id: "gw", secret: Array(repeating: 5, count: 32))])
        configuration.loops = 1
        configuration.timeouts = ConnectionTimeouts(handshake: 400, connect: 1_000, idle: idleTimeout)
        // The origin is on loopback, which the server refuses by default: allow exactly its port.
        configuration.rules = [AccessRule(action: .allow, networks: [try IPNetwork(parsing: "127.0.0.1")], ports: [PortRange(originAddress.port, originAddress.port)], name: "test origin")]
        var logger = Logger(label: "bad-input")
        logger.logLevel = .critical
        let collector = RecordCollector()
        self.records = collector
        server = ProxyServer(configuration: configuration, logger: logger, onEnd: { record in collector.append(record) })
        try server.start()
        address = server.boundAddresses[0]
    }

    func stop() {
        server.shutdown(drainTimeout: 0)
        close(origin)
    }

    /// Sends `bytes` and returns everything the server sends until it closes (or 3 s pass).
    func exchange(_ bytes: [UInt8], halfClose: Bool = false) throws -> (reply: [UInt8], closedAfter: Double) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var tv = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        #expect(address.withSockAddr { connect(fd, $0, $1) } == 0)
        let start = monotonicMilliseconds()
        if !bytes.isEmpty { _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) } }
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        return (reply, Double(monotonicMilliseconds() - start))
    }

    func errorCode(in reply: [UInt8]) -> ConvertErrorCode? {
        (try? ConvertMessage.decode(reply))?.message.error?.0
    }

    func destination(port: UInt16) -> SocketAddress {
        SocketAddress(.v4([127, 0, 0, 1]), port: port)
    }
}

