import ConvertProtocol
import DataPlane
import Logging
import Synchronization

/// How the client judges its servers: the periodic Info exchange and what real connections
/// show both feed one health state per server (`HealthState`: down after `fall` failures in a
/// row, back after `rise` successes).
public struct ServerHealthSettings: Sendable, Equatable {
    /// Between Info exchanges with each server.
    public var interval: UInt64 = 1_000
    /// An Info exchange (MPTCP connect, signed request, reply) that takes longer has failed.
    public var timeout: UInt64 = 1_000
    public var rise = 2
    public var fall = 2
    /// A new connection that gets no answer from a server within this long moves on to the
    /// next healthy one (and counts as a failure of the first): a SYN and one retransmission.
    public var attemptTimeout: UInt64 = 1_500

    public init() {}

    var checks: HealthCheckSettings {
        var settings = HealthCheckSettings()
        settings.interval = interval
        settings.timeout = timeout
        settings.rise = rise
        settings.fall = fall
        return settings
    }
}

/// The client's servers, in the operator's order of preference, with their health. New
/// connections go to the first healthy one and, when it does not answer, to the next
/// (`candidates`); connections already relaying stay where they are. Shared by every loop.
public final class ServerEndpoints: Sendable {
    public let servers: [SocketAddress]
    public let settings: ServerHealthSettings
    private let health: Mutex<[HealthState]>
    private let chosenServer: Mutex<SocketAddress?>
    private let logger: Logger?
    private let metrics: ProxyMetrics?
    private let sources = Mutex<[IPAddress]>([])
    private let failureObserver = Mutex<(@Sendable () -> Void)?>(nil)

    /// Called on every failed check or connection (the client's path manager then looks at the
    /// subflows at once: on an idle gateway that is how a black-holed uplink is noticed).
    public func onFailure(_ observer: @escaping @Sendable () -> Void) {
        failureObserver.withLock { $0 = observer }
    }

    public init(_ servers: [SocketAddress], settings: ServerHealthSettings = ServerHealthSettings(),
                logger: Logger? = nil, metrics: ProxyMetrics? = nil) {
        precondition(!servers.isEmpty, "a client needs a server")
        self.servers = servers
        self.settings = settings
        // Every server starts up: connections flow at once, the checks correct within `fall`.
        health = Mutex(servers.map { _ in HealthState(isUp: true) })
        chosenServer = Mutex(servers.first)
        self.logger = logger
        self.metrics = metrics
        for server in servers { metrics?.serverHealth(server, up: true, chosen: server == servers.first) }
        metrics?.serverFailover(count: 0)  // present from the start: a scrape sees 0, not nothing
    }

    /// The local addresses connections to the servers (and their health checks) start from, at
    /// most one per family; empty lets routing choose. The path manager sets them while a path
    /// is failed that routing may still send the first subflow over (a black-holed uplink
    /// carrying the route to the servers), and clears them when none is.
    public func setUpstreamSources(_ addresses: [IPAddress]) {
        let changed = sources.withLock { current -> Bool in
            defer { current = addresses }
            return current != addresses
        }
        if changed {
            logger?.notice("connections to the servers now start from \(addresses.isEmpty ? "wherever routing chooses" : addresses.map { "\($0)" }.joined(separator: ", "))")
        }
    }

    /// The sources set now (at most one per family); a dial binds to the one of its family.
    public var upstreamSources: [IPAddress] { sources.withLock { $0 } }

    /// The source for a connection to `server`: the configured one of its family, or nil.
    public func upstreamSource(for server: SocketAddress) -> IPAddress? {
        upstreamSources.first { $0.family == server.family }
    }

    /// The healthy servers, best first; empty when none is.
    public func candidates() -> [SocketAddress] {
        health.withLock { states in servers.indices.filter { states[$0].isUp }.map { servers[$0] } }
    }

    /// Where new connections go now (nil: nowhere, every server is down).
    public var chosen: SocketAddress? { chosenServer.withLock { $0 } }

    public func isUp(_ server: SocketAddress) -> Bool {
        guard let index = servers.firstIndex(of: server) else { return false }
        return health.withLock { $0[index].isUp }
    }

    public enum Evidence: String, Sendable {
        case check = "Info exchange"
        case connection = "connection"
    }

    /// Records one outcome for `server`; logs and exports a change of its state and of the
    /// server new connections go to.
    public func record(_ server: SocketAddress, success: Bool, evidence: Evidence, detail: String) {
        if !success { failureObserver.withLock { $0 }?() }
        guard let index = servers.firstIndex(of: server) else { return }
        let changed = health.withLock { $0[index].record(success: success, rise: settings.rise, fall: settings.fall) }
        guard changed else { return }
        let up = success
        let (before, after): (SocketAddress?, SocketAddress?) = chosenServer.withLock { chosen in
            let before = chosen
            chosen = candidates().first
            return (before, chosen)
        }
        logger?.notice("server \(server) is \(up ? "up" : "down") (\(evidence.rawValue): \(detail)); new connections go to \(after.map { "\($0)" } ?? "no server: every one is down, LAN connections are refused")")
        for each in servers { metrics?.serverHealth(each, up: isUp(each), chosen: each == after) }
        if before != after { metrics?.serverFailover() }
    }

    /// The health check of each server: a signed request with only an Info TLV over MPTCP,
    /// which a converter answers with its Supported TCP Extensions (docs/protocol.md). It
    /// proves the path, the server process, and that it still accepts this key.
    public func targets(key: ClientKey) -> [HealthTarget] {
        servers.map { server in
            HealthTarget(address: server, settings: settings.checks, probe: Self.infoProbe(key: key),
                         source: { [self] in upstreamSource(for: server) }) { [self] success, detail in
                record(server, success: success, evidence: .check, detail: detail)
            }
        }
    }

    public static func infoProbe(key: ClientKey) -> HealthProbe {
        HealthProbe(mptcp: true, request: {
            (try? ConvertMessage.signedRequest([.info], key: key, timestamp: unixMilliseconds())) ?? []
        }, judge: { received, ended in
            guard received.count >= ConvertWire.headerLength else { return ended ? .failed("closed after \(received.count) bytes") : .needMore }
            let length: Int?
            do throws(ConvertProtocolError) {
                length = try ConvertMessage.expectedLength(prefix: received)
            } catch {
                return .failed("not a Convert reply: \(error.reason)")
            }
            guard let total = length else { return ended ? .failed("closed mid-reply") : .needMore }
            guard received.count >= total else { return ended ? .failed("reply cut short") : .needMore }
            guard let message = try? ConvertMessage.decode(Array(received.prefix(total))).message else { return .failed("malformed reply") }
            if let (code, _) = message.error { return .failed("refused: \(code) (\(code.rawValue))") }
            guard let extensions = message.supportedExtensions, extensions.contains(30) else {
                return .failed("no Supported TCP Extensions with Multipath TCP in the reply")
            }
            return .passed
        })
    }
}

/// Runs the servers' Info exchanges on the client's housekeeping loop.
final class ServerHealthMonitor: ServiceCompanion {
    private let servers: ServerEndpoints
    private let key: ClientKey
    private let checker = Mutex<HealthChecker?>(nil)

    init(servers: ServerEndpoints, key: ClientKey) {
        self.servers = servers
        self.key = key
    }

    func start(on loop: EventLoop) {
        let started = HealthChecker(loop: loop)
        checker.withLock { $0 = started }
        started.run(servers.targets(key: key))
    }

    func stop() {
        checker.withLock { $0 }?.stop()
    }

    func pathsLost(_ lost: Set<IPAddress>) {
        checker.withLock { $0 }?.pathsLost(lost)
    }
}
