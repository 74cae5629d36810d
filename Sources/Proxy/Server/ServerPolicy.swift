import ConvertProtocol
import DataPlane
import Logging
import Synchronization

/// Everything the server's connections consult, built from one configuration and swapped whole
/// by a reload: a connection takes the snapshot current at its accept and keeps it, so a reload
/// never changes the rules under a handshake in progress, and running connections keep going.
public final class ServerPolicy: Sendable {
    public let authenticator: ConvertAuthenticator
    public let access: AccessPolicy
    public let pools: [String: UpstreamPool]
    /// Pool by key id (reverse-proxy mode for that key).
    public let keyPools: [String: String]
    /// Pool by listener address.
    public let listenerPools: [SocketAddress: String]
    /// Limits; the counters live across reloads in `admission`.
    public let limits: ServerLimits
    let admission: AdmissionControl
    public let hostAddresses: HostAddresses
    let metrics: ProxyMetrics

    init(authenticator: ConvertAuthenticator, access: AccessPolicy, pools: [String: UpstreamPool], keyPools: [String: String],
         listenerPools: [SocketAddress: String], limits: ServerLimits, admission: AdmissionControl, hostAddresses: HostAddresses,
         metrics: ProxyMetrics) {
        self.authenticator = authenticator
        self.access = access
        self.pools = pools
        self.keyPools = keyPools
        self.listenerPools = listenerPools
        self.limits = limits
        self.admission = admission
        self.hostAddresses = hostAddresses
        self.metrics = metrics
    }

    /// The verdict on one destination, with the host's current addresses; refusals are counted.
    func verdict(for address: IPAddress, port: UInt16, keyID: String?) -> AccessVerdict {
        var policy = access
        policy.hostAddresses = hostAddresses.current
        let verdict = policy.verdict(for: address, port: port, keyID: keyID)
        if !verdict.allowed { metrics.refused(rule: verdict.rule) }
        return verdict
    }

    /// Counts an authenticated connection against its key's limit.
    func admit(key: String) -> Result<ConnectionLease, ConvertProtocolError> {
        if let refusal = admission.admit(key: key) { return .failure(refusal) }
        metrics.keyAdmitted(key)
        return .success(ConnectionLease(.key(admission, key)))
    }

    func pool(forKey key: String?) -> UpstreamPool? {
        guard let key, let name = keyPools[key] else { return nil }
        return pools[name]
    }
}

/// The addresses of the host the server runs on (its namespace), kept current by an rtnetlink
/// subscription of the service: a destination equal to one of them is refused, since reaching
/// the endpoint's own services through it would bypass every rule that protects them.
public final class HostAddresses: Sendable {
    private let addresses = Mutex<Set<IPAddress>>([])
    public init() {}
    public var current: Set<IPAddress> { addresses.withLock { $0 } }
    public func replace(_ new: Set<IPAddress>) { addresses.withLock { $0 = Set(new.map(\.normalized)) } }
}
