import ConvertProtocol
import DataPlane
import Glibc
import Logging
import MPTCPKernel
import PathManager
import Proxy
import Synchronization
import TestSupport
import Testing

let kernelTestsEnabled = KernelTestGate.enabled

/// A value shared by test threads.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func update(_ body: (inout Value) -> Void) { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}

/// Thread-safe list of connection end records.
final class RecordLog: Sendable {
    private let records = Locked<[ConnectionRecord]>([])
    func append(_ record: ConnectionRecord) { records.update { $0.append(record) } }
    var all: [ConnectionRecord] { records.value }

    /// Waits (bounded) until `count` records are in.
    func wait(for count: Int, seconds: Double = 10) -> [ConnectionRecord] {
        let deadline = monotonicMilliseconds() + UInt64(seconds * 1000)
        while all.count < count && monotonicMilliseconds() < deadline { usleep(10_000) }
        return all
    }
}

/// The full chain on the testbed: hash server on origin, proxy server on vps, proxy client on
/// gw with a forward from 10.10.0.1:8080 to the origin's port 9000. Torn down by `stop()`.
final class ProxyChain {
    static let key = ClientKey(id: "gw-test", secret: Array(0..<32))
    static let forwardPort: UInt16 = 8080
    static let originPort: UInt16 = 9000
    static let serverPort: UInt16 = 4443

    let testbed: Testbed
    let origin: HashServer
    let server: ProxyServer
    let client: ProxyService
    let serverRecords = RecordLog()
    /// Further servers on vps (same address, ports `extraServerPorts`), after `server` in the client's list.
    let extraServers: [ProxyServer]
    let extraServerRecords: [RecordLog]
    let clientRecords = RecordLog()
    let pathManager: PathManagerService?

    /// - Parameters:
    ///   - clientKey: the key the client signs with (a wrong one for the auth tests).
    ///   - destinationPort: where the forward points (a closed port for the refusal test).
    ///   - beforeStart: runs after the testbed is up, before the services start.
    ///   - serverFastOpen: let the server accept data in the SYN (off by default: decision 0009).
    ///   - pathManager: run this path manager in gw (the testbed then sets up no endpoints or
    ///     per-source routing of its own).
    ///   - extraServerPorts: run one more server on vps per port; the client lists them after the first.
    ///   - serverHealth: how the client checks its servers.
    init(rates: Testbed.Rates = .init(), clientKey: ClientKey = ProxyChain.key,
         destinationPort: UInt16 = ProxyChain.originPort, pathManager: PathManagerConfiguration? = nil,
         serverFastOpen: Bool = false, extraServerPorts: [UInt16] = [], serverHealth: ServerHealthSettings = ServerHealthSettings(),
         ipv6Path: Bool = false, delays: [String: Int] = [:], adjustServer: (inout ServerConfiguration) throws -> Void = { _ in },
         adjustClient: (inout ClientConfiguration) throws -> Void = { _ in },
         beforeStart: (Testbed) throws -> Void = { _ in }) throws {
        testbed = try Testbed(rates: rates, endpoints: pathManager == nil, ipv6Path: ipv6Path, delays: delays)
        do {
            try beforeStart(testbed)
            origin = try HashServer(namespace: testbed.namespace(.origin), address: try SocketAddress(parsing: "\(Testbed.originAddress):\(ProxyChain.originPort)"))
        } catch {
            testbed.down()
            throw error
        }
        var logger = Logger(label: "e2e")
        logger.logLevel = .notice
        var serverConfig = ServerConfiguration(listen: [try SocketAddress(parsing: "\(Testbed.serverAddress):\(ProxyChain.serverPort)"),
                                                        try SocketAddress(parsing: "[\(Testbed.serverAddress6)]:\(ProxyChain.serverPort)")],
                                               keys: [ProxyChain.key])
        serverConfig.namespace = testbed.namespace(.vps)
        serverConfig.loops = 2
        if serverFastOpen { serverConfig.fastOpenQueue = 256 }
        // The testbed's origin has a private address, which the server refuses by default: the
        // operator of such a VPS opens it, as here.
        serverConfig.rules = [AccessRule(action: .allow, networks: [try IPNetwork(parsing: "10.20.0.0/24"), try IPNetwork(parsing: "fd00:20::/64")],
                                         name: "testbed origin")]
        do { try adjustServer(&serverConfig) } catch { testbed.down(); throw error }
        server = ProxyServer(configuration: serverConfig, logger: logger, onEnd: { [serverRecords] in serverRecords.append($0) })
        var extraServers: [ProxyServer] = []
        var extraServerRecords: [RecordLog] = []
        for port in extraServerPorts {
            var config = serverConfig
            config.listeners = [ServerConfiguration.Listener(address: try SocketAddress(parsing: "\(Testbed.serverAddress):\(port)"))]
            let records = RecordLog()
            extraServerRecords.append(records)
            extraServers.append(ProxyServer(configuration: config, logger: logger, onEnd: { records.append($0) }))
        }
        self.extraServers = extraServers
        self.extraServerRecords = extraServerRecords
        let serverAddresses = try ([ProxyChain.serverPort] + extraServerPorts).map { try SocketAddress(parsing: "\(Testbed.serverAddress):\($0)") }
        var clientConfig = ClientConfiguration(
            forwards: [Forward(listen: try SocketAddress(parsing: "\(Testbed.gatewayLANAddress):\(ProxyChain.forwardPort)"),
                               destination: try SocketAddress(parsing: "\(Testbed.originAddress):\(destinationPort)"))],
            upstream: UpstreamEndpoint(servers: serverAddresses, key: clientKey))
        clientConfig.serverHealth = serverHealth
        do { try adjustClient(&clientConfig) } catch { testbed.down(); throw error }
        clientConfig.namespace = testbed.namespace(.gw)
        clientConfig.loops = 2
        client = ProxyClient.makeService(clientConfig, logger: logger, onEnd: { [clientRecords] in clientRecords.append($0) })
        if var configuration = pathManager {
            configuration.namespace = testbed.namespace(.gw)
            configuration.onUpstreamSources = { [servers = client.serverEndpoints] in servers?.setUpstreamSources($0) }
            configuration.onPathsLost = { [client] in client.pathsLost($0) }
            configuration.activity = { [metrics = client.metrics] in metrics.connectionEvents }
            let manager = PathManagerService(configuration: configuration, logger: logger)
            client.serverEndpoints?.onFailure { [weak manager] in manager?.sampleSoon() }
            self.pathManager = manager
        } else {
            self.pathManager = nil
        }
        do {
            try self.pathManager?.start()
            try server.start()
            for extra in extraServers { try extra.start() }
            try client.start()
        } catch {
            origin.stop()
            server.shutdown(drainTimeout: 0)
            for extra in extraServers { extra.shutdown(drainTimeout: 0) }
            self.pathManager?.stop()
            testbed.down()
            throw error
        }
    }

    var forwardAddress: SocketAddress {
        try! SocketAddress(parsing: "\(Testbed.gatewayLANAddress):\(ProxyChain.forwardPort)")
    }

    /// One checked transfer from the LAN host through the chain.
    func transfer(upload: Int, download: Int, seed: UInt64 = 1, timeoutSeconds: Int = 60) throws -> TransferResult {
        let address = forwardAddress
        do {
            return try OSThread.run(in: testbed.namespace(.lan)) {
                try HashServer.transfer(to: address, upload: upload, download: download, seed: seed, timeoutSeconds: timeoutSeconds)
            }
        } catch let error as TrafficError where error.isCorruption {
            // Lost bytes are never retried away: the test stops, and the report carries what
            // both kernels did meanwhile (their MPTCP counters, sockets and endpoints).
            print("corrupted transfer (seed \(seed)): \(error)")
            printKernelState()
            if let evidence = kernelMappingEvidence() { throw KernelMappingCorruption(transfer: error, evidence: evidence) }
            throw error
        }
    }

    /// The counters by which a kernel says that it met MPTCP data it could not map: each
    /// means a data sequence mapping that contradicted the one already in force, data the
    /// checksum refused, or a fallback forced by either. None moves in a correct transfer.
    static let mappingAnomalyCounters: Set<String> = [
        "MPTcpExtDSSNotMatching", "MPTcpExtDSSNoMatchTCP", "MPTcpExtDataCsumErr",
        "MPTcpExtDSSCorruptionFallback", "MPTcpExtDSSCorruptionReset",
    ]

    /// "vps MPTcpExtDSSNotMatching=1": what either kernel counted of those since the testbed
    /// came up (its namespaces are new, so every count is this chain's), or nil for none.
    func kernelMappingEvidence() -> String? {
        var found: [String] = []
        for host in [Testbed.Host.gw, .vps] {
            for counter in NetstatCounters.parse(netstat(host)) where counter.value > 0 && Self.mappingAnomalyCounters.contains(counter.name) {
                found.append("\(host) \(counter.name)=\(counter.value)")
            }
        }
        return found.isEmpty ? nil : found.joined(separator: ", ")
    }

    /// Connects from the LAN host and reads one byte: the errno it fails with (0 if none).
    func lanReadErrno() throws -> Int32 {
        let address = forwardAddress
        return try OSThread.run(in: testbed.namespace(.lan)) { () -> Int32 in
            let fd = try BlockingSocket.connect(to: address, timeoutSeconds: 5)
            defer { close(fd) }
            var byte: UInt8 = 0
            return recv(fd, &byte, 1, 0) < 0 ? errno : 0
        }
    }

    /// The kernel's protocol counters in `host`'s namespace (empty if they cannot be read).
    func netstat(_ host: Testbed.Host) -> String {
        (try? testbed.exec(host, ["cat", "/proc/net/netstat"])) ?? ""
    }

    /// What the kernel holds on gw and vps, printed when a test fails.
    func printKernelState() {
        for host in [Testbed.Host.gw, .vps] {
            print("== \(host) MPTCP counters: " + NetstatCounters.nonZeroSummary(netstat(host)))
            for command in [["ip", "mptcp", "endpoint", "show"], ["ip", "-br", "link"], ["ip", "rule"], ["ip", "route", "show", "table", "all"], ["ss", "-tnMi"]] {
                print("== \(host) \(command.joined(separator: " "))\n" + ((try? testbed.exec(host, command)) ?? "?"))
            }
        }
    }

    /// Bytes each gw path interface has sent so far (from the kernel's counters).
    func pathTransmitBytes() throws -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for path in ["wifi", "eth", "cell"] {
            let text = try testbed.exec(.gw, ["cat", "/sys/class/net/\(path)/statistics/tx_bytes"])
            result[path] = UInt64(text.filter { $0.isNumber }) ?? 0
        }
        return result
    }

    func stop() {
        client.shutdown(drainTimeout: 1_000)
        server.shutdown(drainTimeout: 1_000)
        for extra in extraServers { extra.shutdown(drainTimeout: 1_000) }
        pathManager?.stop()
        origin.stop()
        testbed.down()
    }
}

/// A corrupted transfer that the kernel itself flagged: one of its MPTCP mapping-anomaly
/// counters moved on this testbed (ProxyChain.mappingAnomalyCounters). User space writes
/// bytes; it cannot make a kernel see a mapping contradict another.
struct KernelMappingCorruption: Error, CustomStringConvertible {
    var transfer: TrafficError
    var evidence: String
    var description: String { "\(transfer) — the kernel counted a mapping anomaly: \(evidence)" }
}

/// Runs `body` with a chain that is always torn down, even when `body` throws.
func withChain(rates: Testbed.Rates = .init(), clientKey: ClientKey = ProxyChain.key, destinationPort: UInt16 = ProxyChain.originPort,
                  pathManager: PathManagerConfiguration? = nil, serverFastOpen: Bool = false,
                  extraServerPorts: [UInt16] = [], serverHealth: ServerHealthSettings = ServerHealthSettings(),
                  ipv6Path: Bool = false, delays: [String: Int] = [:], adjustServer: (inout ServerConfiguration) throws -> Void = { _ in },
                  adjustClient: (inout ClientConfiguration) throws -> Void = { _ in },
                  beforeStart: (Testbed) throws -> Void = { _ in }, _ body: (ProxyChain) throws -> Void) throws {
    let chain = try ProxyChain(rates: rates, clientKey: clientKey, destinationPort: destinationPort, pathManager: pathManager,
                               serverFastOpen: serverFastOpen, extraServerPorts: extraServerPorts, serverHealth: serverHealth,
                               ipv6Path: ipv6Path, delays: delays, adjustServer: adjustServer, adjustClient: adjustClient, beforeStart: beforeStart)
    defer { chain.stop() }
    do {
        try body(chain)
    } catch let error as KernelMappingCorruption {
        // Linux 6.18 (docs/kernel-issues.md §2): bytes lost under a mapping the kernel flagged
        // as contradicting itself. The test ends here, reported as a known issue with the
        // evidence; a corruption without such a count fails it.
        withKnownIssue("Linux 6.18 MPTCP lost bytes under a mapping it flagged (docs/kernel-issues.md)", isIntermittent: true) {
            throw error
        }
    }
}
