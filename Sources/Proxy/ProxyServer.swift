import ConvertProtocol
import DataPlane
import Logging
import MPTCPKernel
import Synchronization

/// Configuration of the server endpoint (`mptcp-proxy server`; keys in docs/configuration.md).
public struct ServerConfiguration: Sendable {
    public struct Listener: Sendable, Equatable {
        public var address: SocketAddress
        /// Every connection on this listener goes to this pool, whatever it asks for.
        public var pool: String?
        public init(address: SocketAddress, pool: String? = nil) {
            self.address = address
            self.pool = pool
        }
    }

    public struct Pool: Sendable, Equatable {
        public var name: String
        public var members: [SocketAddress]
        public var balance: UpstreamPool.Balance
        public var health: HealthCheckSettings
        public init(name: String, members: [SocketAddress], balance: UpstreamPool.Balance = .roundRobin, health: HealthCheckSettings = HealthCheckSettings()) {
            self.name = name
            self.members = members
            self.balance = balance
            self.health = health
        }
    }

    public var listeners: [Listener]
    public var keys: [ClientKey]
    /// Serve requests without a cookie. Off unless the operator says so explicitly.
    public var allowUnauthenticated = false
    public var timeouts = ConnectionTimeouts()
    public var loops = LoopGroup.coreCount
    /// TCP_FASTOPEN queue on the listeners; 0 (the default) refuses data in the SYN: Linux 6.18
    /// misplaces stream bytes on an MPTCP socket that accepted SYN data when the client's
    /// first bytes after it arrive on a joining subflow (docs/decisions/0009). Clients still
    /// send the request with their SYN; the kernel resends it after the handshake.
    public var fastOpenQueue: Int32 = 0
    /// SO_RCVBUF of the listeners, inherited by every accepted connection (MPTCPReceiveBuffer);
    /// 0, the default, leaves it to the kernel's autotuning.
    public var mptcpReceiveBuffer: Int32 = 0
    /// Seconds a cookie timestamp may lag behind our clock, and lead it.
    public var maximumClockSkew: UInt64 = 60
    public var maximumFutureSkew: UInt64 = 5
    /// Nonces the replay cache keeps across all keys.
    public var replayCacheEntries = 1 << 17
    public var limits = ServerLimits()
    public var rules: [AccessRule] = []
    public var defaultAction: AccessRule.Action = .allow
    public var pools: [Pool] = []
    /// Pool by key id.
    public var keyPools: [String: String] = [:]
    public var namespace: NetworkNamespace?
    /// Serve /metrics here (`metrics` in the file, `--metrics` on the command line).
    public var metrics: SocketAddress?
    /// Connection-end lines about refused connections, per source and minute, before they are
    /// counted instead of written.
    public var rejectionLogLinesPerMinute = 20

    public init(listen: [SocketAddress], keys: [ClientKey]) {
        self.listeners = listen.map { Listener(address: $0) }
        self.keys = keys
    }

    public var listen: [SocketAddress] { listeners.map(\.address) }
}

/// The server endpoint: terminates MPTCP (plain TCP clients are served too), checks the Convert
/// request and its cookie, applies the access rules and limits, connects to the destination (or
/// a pool member) and relays. `reload` swaps keys, rules, limits, pools and listeners while
/// running connections keep going.
public final class ProxyServer: @unchecked Sendable {
    public let service: ProxyService
    public private(set) var configuration: ServerConfiguration
    private let logger: Logger
    private let policy: Mutex<ServerPolicy>
    private let admission: AdmissionControl
    private let hostAddresses = HostAddresses()
    /// Cookies stamped before this instant are refused: a restart reopens no replays.
    private let startedAt = unixMilliseconds() - 1
    private var housekeeping: LoopGroup?
    private var healthChecker: HealthChecker?
    private var addressMonitor: HostAddressMonitor?
    private let reloadLock = Mutex(())

    /// How the listeners' accept closures reach the server without keeping it alive.
    private final class WeakServer: @unchecked Sendable {
        weak var server: ProxyServer?
    }
    private let acceptor = WeakServer()

    public init(configuration: ServerConfiguration, logger: Logger, onEnd: (@Sendable (ConnectionRecord) -> Void)? = nil) {
        self.configuration = configuration
        self.logger = logger
        service = ProxyService(name: "server", role: .server, specs: Self.specs(configuration, acceptor: acceptor),
                               loops: configuration.loops, namespace: configuration.namespace, timeouts: configuration.timeouts,
                               logger: logger, resolver: ThreadPoolResolver.shared,
                               rejectionLogLinesPerMinute: configuration.rejectionLogLinesPerMinute, onEnd: onEnd)
        let metrics = service.metrics
        admission = AdmissionControl(limits: configuration.limits, refused: { metrics.limitHit($0) })
        policy = Mutex(Self.makePolicy(configuration, previous: nil, admission: admission, hostAddresses: hostAddresses,
                                       metrics: metrics, floor: startedAt))
        acceptor.server = self
    }

    public var currentPolicy: ServerPolicy { policy.withLock { $0 } }

    private static func specs(_ configuration: ServerConfiguration, acceptor: WeakServer) -> [ListenerSpec] {
        configuration.listeners.map {
            ListenerSpec(address: $0.address, options: ListenerOptions(mptcp: true, fastOpenQueue: configuration.fastOpenQueue,
                                                                 receiveBuffer: configuration.mptcpReceiveBuffer)) { context, socket, peer in
                acceptor.server?.accept(context, socket, peer: peer)
            }
        }
    }

    /// One accepted connection: counted against the limits (or refused in Convert's words),
    /// then a Convert frontend and a direct upstream on the policy current now.
    private func accept(_ context: ConnectionContext, _ socket: Socket, peer: SocketAddress?) {
        let current = currentPolicy
        var refusal: ConvertProtocolError?
        var leases: [ConnectionLease] = []
        var handshakeLeases: [ConnectionLease] = []
        switch admission.admit(source: peer?.address, now: context.loop.now) {
        case .success(let admitted):
            leases = [admitted.connection]
            handshakeLeases = admitted.handshake.map { [$0] } ?? []
        case .failure(let refused):
            refusal = refused
        }
        // The listener is known by the address it was bound to: the connection's local address,
        // or the wildcard of its family when bound to all addresses.
        var pool: UpstreamPool?
        if !current.listenerPools.isEmpty, let local = socket.localAddress() {
            pool = (current.listenerPools[local] ?? current.listenerPools[SocketAddress(local.address.unspecifiedOfFamily, port: local.port)])
                .flatMap { current.pools[$0] }
        }
        ConnectionDriver(context: context, inbound: socket, peer: peer,
                         frontend: ConvertFrontend(authenticator: current.authenticator, peer: peer),
                         upstream: DirectUpstream(connectTimeout: context.timeouts.connect, policy: current, pool: pool),
                         refusal: refusal, leases: leases, handshakeLeases: handshakeLeases).launch()
    }

    private static func makePolicy(_ configuration: ServerConfiguration, previous: ServerPolicy?, admission: AdmissionControl,
                                   hostAddresses: HostAddresses, metrics: ProxyMetrics, floor: UInt64) -> ServerPolicy {
        var settings = ConvertAuthenticator.Settings()
        settings.freshness = Freshness(pastSeconds: configuration.maximumClockSkew, futureSeconds: configuration.maximumFutureSkew)
        settings.requireCookie = !configuration.allowUnauthenticated
        settings.replayCapacity = configuration.replayCacheEntries
        let authenticator = ConvertAuthenticator(keys: configuration.keys, settings: settings, floor: floor, previous: previous?.authenticator)
        // A pool whose definition did not change keeps its members' health and counts.
        var pools: [String: UpstreamPool] = [:]
        for pool in configuration.pools {
            if let old = previous?.pools[pool.name], old.members.map(\.address) == pool.members, old.balance == pool.balance, old.health == pool.health {
                pools[pool.name] = old
            } else {
                pools[pool.name] = UpstreamPool(name: pool.name, members: pool.members, balance: pool.balance, health: pool.health)
            }
        }
        var listenerPools: [SocketAddress: String] = [:]
        for listener in configuration.listeners { if let pool = listener.pool { listenerPools[listener.address] = pool } }
        return ServerPolicy(authenticator: authenticator,
                            access: AccessPolicy(rules: configuration.rules, defaultAction: configuration.defaultAction),
                            pools: pools, keyPools: configuration.keyPools, listenerPools: listenerPools,
                            limits: configuration.limits, admission: admission, hostAddresses: hostAddresses, metrics: metrics)
    }

    public func start() throws {
        let housekeeping = try LoopGroup(count: 1, name: "server-housekeeping", namespace: configuration.namespace, pipeSize: 4096)
        self.housekeeping = housekeeping
        do {
            let loop = housekeeping.loops[0]
            addressMonitor = try housekeeping.onEachLoop { _ in try HostAddressMonitor(loop: loop, addresses: self.hostAddresses, logger: self.logger) }.first
            healthChecker = HealthChecker(loop: loop)
            try service.start()
        } catch {
            addressMonitor?.stop()
            housekeeping.shutdown()
            self.housekeeping = nil
            throw error
        }
        checkPools(currentPolicy)
    }

    /// Health checks for every pool member of `policy`, reported to the members and /metrics.
    private func checkPools(_ policy: ServerPolicy) {
        guard let healthChecker else { return }
        let metrics = service.metrics
        let logger = self.logger
        var targets: [HealthTarget] = []
        for pool in policy.pools.values.sorted(by: { $0.name < $1.name }) {
            for member in pool.members {
                metrics.poolMember(pool.name, member.address, up: member.isUp)
                let settings = pool.health
                targets.append(HealthTarget(address: member.address, settings: settings, probe: .tcp(send: settings.send, expect: settings.expect)) { success, detail in
                    if member.record(success: success, settings: settings) {
                        logger.notice("pool \(pool.name): member \(member.address) is \(member.isUp ? "up" : "down") (\(detail))")
                        metrics.poolMember(pool.name, member.address, up: member.isUp)
                    }
                })
            }
        }
        healthChecker.run(targets)
    }

    /// Applies a new configuration: keys added and revoked, rules, limits, pools and listeners.
    /// Throws (and changes nothing) if a new listener cannot be opened. Running connections keep
    /// their snapshot; a revoked key's new connections are refused from now on. Changes to
    /// loops, timeouts, the fast-open queue, the namespace or the metrics address need a restart.
    public func reload(_ new: ServerConfiguration) throws {
        try reloadLock.withLock { _ in
            let old = configuration
            let next = Self.makePolicy(new, previous: currentPolicy, admission: admission, hostAddresses: hostAddresses,
                                       metrics: service.metrics, floor: startedAt)
            try service.setListeners(Self.specs(new, acceptor: acceptor))
            admission.update(new.limits)
            policy.withLock { $0 = next }
            configuration = new
            checkPools(next)
            var ignored: [String] = []
            if old.loops != new.loops { ignored.append("loops") }
            if old.timeouts != new.timeouts { ignored.append("timeouts") }
            if old.fastOpenQueue != new.fastOpenQueue { ignored.append("fast-open-queue") }
            if old.mptcpReceiveBuffer != new.mptcpReceiveBuffer { ignored.append("mptcp-receive-buffer") }
            if old.metrics != new.metrics { ignored.append("metrics") }
            if !ignored.isEmpty { logger.warning("reload: \(ignored.joined(separator: ", ")) take effect at the next restart") }
            logger.notice("reloaded: \(new.keys.count) key(s), \(new.rules.count) rule(s), \(new.pools.count) pool(s), listening on \(new.listen.map(\.description).joined(separator: ", "))")
        }
    }

    /// A reload as SIGHUP does it: `load` reads the configuration again; a bad one is refused
    /// with its file:line:key and the running configuration stays. Counted in /metrics.
    @discardableResult
    public func reload(_ load: () throws -> ServerConfiguration) -> Bool {
        do {
            try reload(try load())
            service.metrics.reloaded(success: true)
            return true
        } catch {
            logger.error("reload refused, the running configuration stays: \(error)")
            service.metrics.reloaded(success: false)
            return false
        }
    }

    public var boundAddresses: [SocketAddress] { service.boundAddresses }

    public func shutdown(drainTimeout: UInt64) {
        service.shutdown(drainTimeout: drainTimeout)
        healthChecker?.stop()
        addressMonitor?.stop()
        housekeeping?.shutdown()
        housekeeping = nil
    }
}

extension IPAddress {
    /// The wildcard of this address's family (0.0.0.0 or ::), for matching a connection's local
    /// address to a listener bound to all addresses.
    var unspecifiedOfFamily: IPAddress {
        switch self {
        case .v4: return .v4([0, 0, 0, 0])
        case .v6: return .v6(AddressBytes(zeros: 16))
        }
    }
}
