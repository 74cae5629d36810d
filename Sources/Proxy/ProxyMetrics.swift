import ConvertProtocol
import CoreMetrics
import DataPlane
import Prometheus
import Synchronization

// swift-metrics' instruments; Prometheus has types of the same names.
private typealias Counter = CoreMetrics.Counter
private typealias Gauge = CoreMetrics.Gauge
private typealias Meter = CoreMetrics.Meter

/// What a proxy exports at `/metrics`: instrumented with swift-metrics (counters, meters,
/// gauges) through a Prometheus factory of its own (no process-wide bootstrap: a test process
/// runs a client and a server side by side), exposed by swift-prometheus' registry.
///
/// Every label value is bounded and ours: roles, reason kinds, limit names, configured key ids,
/// rule and pool names, member addresses — never text a peer chose. Per relaying connection one
/// `mptcp_proxy_connection_info{local,remote,peer,destination,key} 1` names its MPTCP socket's
/// addresses, so `mptcp-stats --proxy` can label the kernel's connections with their destination.
public final class ProxyMetrics: Sendable {
    public struct LiveConnection: Sendable, Equatable {
        public var peer: String
        public var destination: String
        public var keyID: String?
        /// The MPTCP socket's local and remote address, as sock_diag shows them.
        public var mptcpLocal: String
        public var mptcpRemote: String
    }

    public let role: String
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let handshaking: Meter
    private let relaying: Meter
    private let bytesUp: Counter
    private let bytesDown: Counter
    private let live = Mutex<[ObjectIdentifier: Gauge]>([:])
    private let censuses = Mutex<[LoopCensus]>([])
    /// Counters by name and labels: made once, then only incremented (the registry's lookup
    /// takes a lock and allocates, which per connection showed in B3's profile).
    private let counters = Mutex<[CounterKey: Counter]>([:])
    private let perKey = Mutex<[String: KeyCounters]>([:])
    /// `mptcp_proxy_connections_ended_total` by reason kind: one short string hashed per
    /// connection end, where the general cache hashes the name and both labels (callgrind, B3:
    /// `count` was 1,400 instructions a connection).
    private let endedByReason = Mutex<[String: Counter]>([:])

    /// At most two label pairs, inline: the key is built per connection, so it allocates nothing.
    private struct CounterKey: Hashable {
        var name: String
        var first: Label?
        var second: Label?
    }

    private struct Label: Hashable {
        var name: String
        var value: String
    }
    /// Whether anyone serves these metrics: until then relaying connections are not recorded,
    /// so a proxy without /metrics does no per-connection address lookups for them.
    private let exporting = Atomic<Bool>(false)

    init(role: String) {
        self.role = role
        factory = PrometheusMetricsFactory(registry: registry)
        handshaking = Meter(label: "mptcp_proxy_connections", dimensions: [("role", role), ("state", "handshaking")], factory: factory)
        relaying = Meter(label: "mptcp_proxy_connections", dimensions: [("role", role), ("state", "relaying")], factory: factory)
        bytesUp = Counter(label: "mptcp_proxy_relayed_bytes_total", dimensions: [("role", role), ("direction", "up")], factory: factory)
        bytesDown = Counter(label: "mptcp_proxy_relayed_bytes_total", dimensions: [("role", role), ("direction", "down")], factory: factory)
        // Present from the start, so a scrape sees zeros rather than nothing.
        handshaking.set(0)
        relaying.set(0)
        bytesUp.increment(by: 0)
        bytesDown.increment(by: 0)
    }

    /// The factory behind this registry, for a component that counts into the same /metrics
    /// (the client's path manager).
    public var metricsFactory: MetricsFactory { factory }

    /// Starts recording relaying connections (called when a metrics server starts).
    public func startExporting() { exporting.store(true, ordering: .relaxed) }

    var isExporting: Bool { exporting.load(ordering: .relaxed) }

    private func count(_ name: String, _ first: Label? = nil, _ second: Label? = nil, by amount: Int = 1) {
        let key = CounterKey(name: name, first: first, second: second)
        let counter = counters.withLock { cache in
            if let existing = cache[key] { return existing }
            let labels = [first, second].compactMap { $0 }.map { ($0.name, $0.value) }
            let made = Counter(label: name, dimensions: [("role", role)] + labels, factory: factory)
            cache[key] = made
            return made
        }
        counter.increment(by: amount)
    }

    // MARK: connection life

    func handshakeStarted() { handshaking.increment() }

    func relayStarted(_ id: ObjectIdentifier, _ connection: LiveConnection?) {
        handshaking.decrement()
        relaying.increment()
        guard let connection else { return }
        let gauge = Gauge(label: "mptcp_proxy_connection_info", dimensions: [
            ("role", role), ("local", connection.mptcpLocal), ("remote", connection.mptcpRemote),
            ("peer", connection.peer), ("destination", connection.destination), ("key", connection.keyID ?? ""),
        ], factory: factory)
        gauge.record(1)
        live.withLock { $0[id] = gauge }
    }

    /// An Info-only request answered (a client's health check; `mptcp_proxy_info_exchanges_total`).
    func infoAnswered() {
        handshaking.decrement()
        count("mptcp_proxy_info_exchanges_total")
    }

    func ended(_ id: ObjectIdentifier, _ record: ConnectionRecord, relayed: Bool) {
        (relayed ? relaying : handshaking).decrement()
        if isExporting, let gauge = live.withLock({ $0.removeValue(forKey: id) }) { gauge.destroy() }
        let kind = record.reason.kind
        let ended = endedByReason.withLock { cache in
            if let existing = cache[kind] { return existing }
            let made = Counter(label: "mptcp_proxy_connections_ended_total", dimensions: [("role", role), ("reason", kind)], factory: factory)
            cache[kind] = made
            return made
        }
        ended.increment()
        if !relayed { count("mptcp_proxy_handshake_failures_total", Label(name: "reason", value: record.reason.failureKind)) }
        bytesUp.increment(by: Int(clamping: record.bytesUp))
        bytesDown.increment(by: Int(clamping: record.bytesDown))
        if let key = record.keyID {
            let counters = keyCounters(key)
            counters.bytesUp.increment(by: Int(clamping: record.bytesUp))
            counters.bytesDown.increment(by: Int(clamping: record.bytesDown))
        }
    }

    /// A key's three counters, found with one lookup by key id (they are touched twice per
    /// connection, and a lookup by name and labels hashes every string of them).
    private struct KeyCounters {
        var connections: Counter
        var bytesUp: Counter
        var bytesDown: Counter
    }

    private func keyCounters(_ key: String) -> KeyCounters {
        perKey.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = KeyCounters(
                connections: Counter(label: "mptcp_proxy_key_connections_total", dimensions: [("role", role), ("key", key)], factory: factory),
                bytesUp: Counter(label: "mptcp_proxy_key_bytes_total", dimensions: [("role", role), ("key", key), ("direction", "up")], factory: factory),
                bytesDown: Counter(label: "mptcp_proxy_key_bytes_total", dimensions: [("role", role), ("key", key), ("direction", "down")], factory: factory))
            cache[key] = made
            return made
        }
    }

    // MARK: server policy

    /// An authenticated key got a connection past its limits.
    func keyAdmitted(_ key: String) { keyCounters(key).connections.increment() }

    func refused(rule: String) { count("mptcp_proxy_refusals_total", Label(name: "rule", value: rule)) }

    func limitHit(_ limit: LimitName) { count("mptcp_proxy_limit_hits_total", Label(name: "limit", value: limit.rawValue)) }

    func poolMember(_ pool: String, _ member: SocketAddress, up: Bool) {
        Gauge(label: "mptcp_proxy_pool_member_up", dimensions: [("role", role), ("pool", pool), ("member", member.description)], factory: factory)
            .record(up ? 1 : 0)
    }

    // MARK: client servers

    /// A server's health and whether new connections go to it (`mptcp_proxy_server_up`,
    /// `mptcp_proxy_server_chosen`, 0 or 1).
    func serverHealth(_ server: SocketAddress, up: Bool, chosen: Bool) {
        Gauge(label: "mptcp_proxy_server_up", dimensions: [("role", role), ("server", server.description)], factory: factory).record(up ? 1 : 0)
        Gauge(label: "mptcp_proxy_server_chosen", dimensions: [("role", role), ("server", server.description)], factory: factory).record(chosen ? 1 : 0)
    }

    /// New connections changed server (another one, or none at all).
    func serverFailover(count amount: Int = 1) { count("mptcp_proxy_server_failovers_total", by: amount) }

    /// A connection attempt to a server started again because its SYN left from a path that
    /// failed before the answer came (`ProxyService.pathsLost`).
    func dialRestarted() { count("mptcp_proxy_dial_restarts_total") }

    func reloaded(success: Bool) { count("mptcp_proxy_reloads_total", Label(name: "result", value: success ? "success" : "failure")) }

    func logLinesDropped(_ count: Int) { self.count("mptcp_proxy_log_lines_suppressed_total", by: count) }

    /// The Prometheus text exposition of everything above.
    /// The loops whose pipes and timers `/metrics` shows (`mptcp_proxy_loop_pipes`,
    /// `mptcp_proxy_loop_timers`), summed over the loops, read when scraped.
    public func observe(_ loops: [EventLoop]) {
        censuses.withLock { $0 += loops.map(\.census) }
    }

    /// The observed loops' connection events, summed: unchanged while no connection is
    /// accepted and none has bytes to move, which lets path health leave the subflows unsampled.
    public var connectionEvents: UInt64 {
        censuses.withLock { $0.reduce(0) { $0 &+ $1.connectionEventsHandled } }
    }

    public func render() -> String {
        let observed = censuses.withLock { $0 }
        if !observed.isEmpty {
            Gauge(label: "mptcp_proxy_loop_pipes", dimensions: [("role", role), ("state", "lent")], factory: factory)
                .record(observed.reduce(0) { $0 + $1.pipesLent })
            Gauge(label: "mptcp_proxy_loop_pipes", dimensions: [("role", role), ("state", "idle")], factory: factory)
                .record(observed.reduce(0) { $0 + $1.pipesIdle })
            Gauge(label: "mptcp_proxy_loop_timers", dimensions: [("role", role)], factory: factory)
                .record(observed.reduce(0) { $0 + $1.timersArmed })
        }
        return registry.emitToString()
    }
}

extension CloseReason {
    /// Why a handshake failed, as a label: the Convert error for refusals, else the reason kind.
    var failureKind: String {
        switch self {
        case .rejected(let error), .upstreamFailed(let error): return error.code.slug
        case .refusedByServer(let code): return code.slug
        default: return kind
        }
    }
}

extension ConvertErrorCode {
    /// "Not Authorized" → "not-authorized".
    var slug: String { description.lowercased().replacingSpaces }
}

extension String {
    fileprivate var replacingSpaces: String { split(separator: " ").joined(separator: "-") }
}
