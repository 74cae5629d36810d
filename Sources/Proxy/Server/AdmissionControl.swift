import ConvertProtocol
import DataPlane
import Synchronization

/// The server's limits (configuration keys in docs/configuration.md).
public struct ServerLimits: Sendable, Equatable {
    /// Connections open at once (handshaking or relaying), overall.
    public var maxConnections: Int
    /// Connections open at once per key: with the per-connection cost, what one key can pin.
    public var maxConnectionsPerKey: Int
    /// Handshakes in progress per source address (IPv6: per /64).
    public var maxHandshakesPerSource: Int
    /// New connections per second per source (a token bucket of twice this size).
    public var newConnectionsPerSourcePerSecond: Int
    /// Sources tracked at once; beyond, idle ones are forgotten first, then new sources wait.
    public var trackedSources: Int

    /// Defaults sized for a busy gateway (all its LAN connections arrive from one source, in
    /// bursts of hundreds when a browser opens a page) on a server with 20,000 descriptors (a
    /// relayed connection holds 2, and up to 4 more for pipes while bytes are in flight).
    public init(maxConnections: Int = 8192, maxConnectionsPerKey: Int = 4096, maxHandshakesPerSource: Int = 512,
                newConnectionsPerSourcePerSecond: Int = 1000, trackedSources: Int = 16384) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerKey = maxConnectionsPerKey
        self.maxHandshakesPerSource = maxHandshakesPerSource
        self.newConnectionsPerSourcePerSecond = newConnectionsPerSourcePerSecond
        self.trackedSources = trackedSources
    }
}

/// Which limit refused a connection (a metrics label and a log word).
public enum LimitName: String, Sendable, CaseIterable {
    case connections = "max-connections"
    case connectionsPerKey = "max-connections-per-key"
    case handshakesPerSource = "max-handshakes-per-source"
    case ratePerSource = "new-connections-per-source-per-s"
    case trackedSources = "tracked-sources"
}

/// Counts what the limits bound, for every loop of a server. A connection is counted at accept
/// (overall and per source), per key once authenticated, and uncounted when it ends; its
/// handshake stops counting against its source once it relays. Every refusal is answered with
/// Resource Exceeded (64), whose value suggests a delay in seconds, never a silent drop.
public final class AdmissionControl: Sendable {
    private struct Source {
        var handshakes = 0
        var tokens: Double
        var refilledAt: UInt64
    }

    private struct State {
        var total = 0
        var perKey: [String: Int] = [:]
        var sources: [IPAddress: Source] = [:]
    }

    private let state = Mutex(State())
    private let limits: Mutex<ServerLimits>
    private let refused: @Sendable (LimitName) -> Void

    /// - Parameter refused: told of every refusal (metrics).
    public init(limits: ServerLimits, refused: @escaping @Sendable (LimitName) -> Void = { _ in }) {
        self.limits = Mutex(limits)
        self.refused = refused
    }

    /// New limits (a reload); connections already counted stay counted.
    public func update(_ new: ServerLimits) { limits.withLock { $0 = new } }

    public var openConnections: Int { state.withLock { $0.total } }
    public var trackedSourceCount: Int { state.withLock { $0.sources.count } }
    public func openConnections(key: String) -> Int { state.withLock { $0.perKey[key] ?? 0 } }

    /// IPv6 sources are counted per /64: one subscriber, one share.
    static func sourceKey(_ address: IPAddress) -> IPAddress {
        let normalized = address.normalized
        guard case .v6(var bytes) = normalized else { return normalized }
        for index in 8..<bytes.count { bytes[index] = 0 }
        return .v6(bytes)
    }

    /// What an admitted connection holds: its count overall until it ends, and its source's
    /// count of handshakes in progress until it relays.
    public struct AcceptLeases {
        public var connection: ConnectionLease
        public var handshake: ConnectionLease?
    }

    /// At accept: the leases of an admitted connection, or the refusal to send.
    public func admit(source address: IPAddress?, now: UInt64) -> Result<AcceptLeases, ConvertProtocolError> {
        if let refusal = count(source: address, now: now) { return .failure(refusal) }
        return .success(AcceptLeases(connection: ConnectionLease(.connection(self)),
                                     handshake: address.map { ConnectionLease(.handshake(self, sourceKey: Self.sourceKey($0))) }))
    }

    private func count(source address: IPAddress?, now: UInt64) -> ConvertProtocolError? {
        let limits = self.limits.withLock { $0 }
        let verdict: LimitName? = state.withLock { state in
            if state.total >= limits.maxConnections { return .connections }
            guard let address else {
                state.total += 1
                return nil
            }
            let key = Self.sourceKey(address)
            let rate = Double(max(1, limits.newConnectionsPerSourcePerSecond))
            let burst = rate * 2
            if state.sources[key] == nil && state.sources.count >= limits.trackedSources {
                // Forget sources with nothing in progress whose bucket has refilled: they are idle.
                let idleAfter = UInt64(burst / rate * 1000)
                state.sources = state.sources.filter { $0.value.handshakes > 0 || now &- $0.value.refilledAt < idleAfter }
                if state.sources.count >= limits.trackedSources { return .trackedSources }
            }
            var source = state.sources[key] ?? Source(tokens: burst, refilledAt: now)
            let elapsed = now >= source.refilledAt ? Double(now - source.refilledAt) / 1000 : 0
            source.tokens = min(burst, source.tokens + elapsed * rate)
            source.refilledAt = now
            if source.handshakes >= limits.maxHandshakesPerSource {
                state.sources[key] = source
                return .handshakesPerSource
            }
            if source.tokens < 1 {
                state.sources[key] = source
                return .ratePerSource
            }
            source.tokens -= 1
            source.handshakes += 1
            state.sources[key] = source
            state.total += 1
            return nil
        }
        guard let verdict else { return nil }
        refused(verdict)
        let delay: UInt8 = verdict == .ratePerSource || verdict == .handshakesPerSource ? 1 : 5
        return ConvertProtocolError(.resourceExceeded, "limit \(verdict.rawValue) reached\(address.map { " for \($0)" } ?? "")", value: [delay])
    }

    /// Once the key is known. nil admits (and counts) it; `keyConnectionEnded` uncounts it.
    public func admit(key: String) -> ConvertProtocolError? {
        let limit = limits.withLock { $0.maxConnectionsPerKey }
        let admitted = state.withLock { state -> Bool in
            let open = state.perKey[key] ?? 0
            guard open < limit else { return false }
            state.perKey[key] = open + 1
            return true
        }
        if admitted { return nil }
        refused(.connectionsPerKey)
        return ConvertProtocolError(.resourceExceeded, "limit max-connections-per-key (\(limit)) reached for key \"\(PeerText.escaped(key))\"", value: [5])
    }

    /// The handshake of a connection from the source of `key` is over (relaying, or ended).
    func handshakeEnded(sourceKey key: IPAddress) {
        state.withLock { state in
            guard var source = state.sources[key], source.handshakes > 0 else { return }
            source.handshakes -= 1
            state.sources[key] = source
        }
    }

    func connectionEnded() {
        state.withLock { $0.total = max(0, $0.total - 1) }
    }

    func keyConnectionEnded(_ key: String) {
        state.withLock { state in
            guard let open = state.perKey[key] else { return }
            if open <= 1 { state.perKey[key] = nil } else { state.perKey[key] = open - 1 }
        }
    }
}
