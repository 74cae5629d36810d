import ConvertProtocol
import DataPlane
import Glibc
import Logging
@testable import Proxy
import TestSupport

/// A whole chain on loopback: a checking origin (HashServer), a real server and real clients
/// (forwards), each with one loop, on ports the kernel picks. For the server's policy in action
/// without a testbed: limits, rules, reload, PROXY v2, pools, metrics.
final class LoopbackChain {
    static let keyA = ClientKey(id: "gw-a", secret: Array(repeating: 0xa1, count: 32))
    static let keyB = ClientKey(id: "gw-b", secret: Array(repeating: 0xb2, count: 32))
    static let loopback = IPAddress.v4([127, 0, 0, 1])

    let origins: [HashServer]
    let server: ProxyServer
    private(set) var clients: [ProxyService] = []
    let serverRecords = RecordCollector()
    let clientRecords = RecordCollector()
    private(set) var configuration: ServerConfiguration

    var origin: HashServer { origins[0] }
    var serverAddress: SocketAddress { server.boundAddresses[0] }

    /// - Parameters:
    ///   - originCount: checking origins to start (pool members).
    ///   - configure: adjusts the server configuration (it allows the origins' ports on loopback).
    init(originCount: Int = 1, proxyHeader: Bool = false, configure: (inout ServerConfiguration, [HashServer]) throws -> Void = { _, _ in }) throws {
        signal(SIGPIPE, SIG_IGN)
        origins = try (0..<originCount).map { _ in
            try HashServer(namespace: nil, address: SocketAddress(Self.loopback, port: 0), proxyHeader: proxyHeader)
        }
        var configuration = ServerConfiguration(listen: [SocketAddress(Self.loopback, port: 0)], keys: [Self.keyA, Self.keyB])
        configuration.loops = 1
        configuration.timeouts = ConnectionTimeouts(handshake: 2_000, connect: 2_000, idle: 10_000)
        configuration.rules = origins.map {
            AccessRule(action: .allow, networks: [IPNetwork(Self.loopback, prefixLength: 32)], ports: [PortRange($0.address.port, $0.address.port)],
                       proxyProtocol: proxyHeader, name: "origin \($0.address.port)")
        }
        try configure(&configuration, origins)
        self.configuration = configuration
        var logger = Logger(label: "loopback-chain")
        logger.logLevel = .critical
        let records = serverRecords
        server = ProxyServer(configuration: configuration, logger: logger, onEnd: { records.append($0) })
        do {
            try server.start()
        } catch {
            origins.forEach { $0.stop() }
            throw error
        }
    }

    /// A client forwarding a loopback port to `destination` (default: the first origin) with `key`.
    @discardableResult
    func addClient(key: ClientKey = LoopbackChain.keyA, destination: SocketAddress? = nil, server: SocketAddress? = nil) throws -> SocketAddress {
        var logger = Logger(label: "loopback-client")
        logger.logLevel = .critical
        var configuration = ClientConfiguration(
            forwards: [Forward(listen: SocketAddress(Self.loopback, port: 0), destination: destination ?? origin.address)],
            upstream: UpstreamEndpoint(server: server ?? serverAddress, key: key))
        configuration.loops = 1
        configuration.timeouts = ConnectionTimeouts(handshake: 3_000, connect: 2_000, idle: 10_000)
        let records = clientRecords
        let client = ProxyClient.makeService(configuration, logger: logger, onEnd: { records.append($0) })
        try client.start()
        clients.append(client)
        return client.boundAddresses[0]
    }

    /// Applies a changed configuration to the running server.
    func reload(_ change: (inout ServerConfiguration) -> Void) throws {
        change(&configuration)
        try server.reload(configuration)
    }

    func stop() {
        clients.forEach { $0.shutdown(drainTimeout: 0) }
        server.shutdown(drainTimeout: 0)
        origins.forEach { $0.stop() }
    }

    /// Connects from `source`, sends `bytes` and returns what the server answers until it
    /// closes (or `timeout` seconds pass); `hold` keeps the socket open without reading.
    static func exchange(_ address: SocketAddress, _ bytes: [UInt8], from source: IPAddress? = nil, timeout: Int = 3) throws -> [UInt8] {
        let fd = try BlockingSocket.connect(to: address, timeoutSeconds: timeout, from: source)
        defer { close(fd) }
        if !bytes.isEmpty { try bytes.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) } }
        shutdown(fd, Int32(SHUT_WR))
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        return reply
    }

    static func errorCode(in reply: [UInt8]) -> ConvertErrorCode? {
        (try? ConvertMessage.decode(reply))?.message.error?.0
    }

    /// A signed request for `destination` with `key`.
    static func request(to destination: SocketAddress, key: ClientKey = keyA) throws -> [UInt8] {
        try ConvertMessage.signedRequest(to: destination, key: key, timestamp: unixMilliseconds())
    }
}

/// Runs `body` with a chain that is always stopped, even when `body` throws.
func withLoopbackChain<T>(originCount: Int = 1, proxyHeader: Bool = false,
                          configure: (inout ServerConfiguration, [HashServer]) throws -> Void = { _, _ in },
                          _ body: (LoopbackChain) throws -> T) throws -> T {
    let chain = try LoopbackChain(originCount: originCount, proxyHeader: proxyHeader, configure: configure)
    defer { chain.stop() }
    return try body(chain)
}
