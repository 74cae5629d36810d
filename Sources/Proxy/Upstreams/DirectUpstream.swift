import ConvertProtocol
import DataPlane
import Glibc
import ProxyProtocols

/// The server's upstream: reach the destination with plain TCP (or MPTCP when the client asked),
/// resolving a host name first and trying its addresses in Happy Eyeballs order — or, when the
/// listener or the key is bound to a pool, a healthy member of that pool. Every address is
/// checked against the access rules before it is dialled (after resolution, so a name cannot
/// lead to a refused address); a PROXY v2 header goes first when the rule that allowed the
/// address asks for it.
public struct DirectUpstream: Upstream {
    public enum State: Equatable { case idle, resolving, connecting, sendingProxyHeader, connected, failed }

    public private(set) var state: State = .idle
    public private(set) var leases: [ConnectionLease] = []
    private let connectTimeout: UInt64
    private let policy: ServerPolicy?
    private let listenerPool: UpstreamPool?
    private var pool: UpstreamPool?
    private var request: ConnectRequest?
    /// Candidates whose rule asks for a PROXY v2 header.
    private var proxyHeaderFor: Set<SocketAddress> = []

    /// - Parameters:
    ///   - policy: access rules, limits and pools (nil: none, as in unit tests of the plain path).
    ///   - pool: the pool the listener is bound to, if any.
    public init(connectTimeout: UInt64, policy: ServerPolicy? = nil, pool: UpstreamPool? = nil) {
        self.connectTimeout = connectTimeout
        self.policy = policy
        self.listenerPool = pool
    }

    public mutating func start(_ request: ConnectRequest, wallMilliseconds: UInt64) -> UpstreamStep {
        guard state == .idle else { return impossible("start") }
        self.request = request
        if let policy, let key = request.keyID {
            switch policy.admit(key: key) {
            case .success(let lease): leases.append(lease)
            case .failure(let refusal):
                state = .failed
                return .failed(refusal)
            }
        }
        // A bound pool replaces whatever the client asked for: its members are the operator's.
        if let bound = listenerPool ?? policy?.pool(forKey: request.keyID) {
            pool = bound
            let candidates = bound.candidates(source: request.originalSource)
            guard !candidates.isEmpty else {
                state = .failed
                return .failed(ConvertProtocolError(.networkFailure, "pool \(bound.name): no healthy member"))
            }
            return dial(candidates)
        }
        switch request.destination {
        case .address(let address):
            return dialAllowed([address])
        case .name(let name, let port):
            state = .resolving
            return .resolve(name, port: port)
        }
    }

    public mutating func resolved(_ addresses: [IPAddress], error: String?) -> UpstreamStep {
        guard state == .resolving, let request, case .name(let name, let port) = request.destination else { return impossible("resolved") }
        guard !addresses.isEmpty else {
            state = .failed
            return .failed(ConvertProtocolError(.nameNotResolved, "\"\(PeerText.escaped(name))\": \(error ?? "no addresses")"))
        }
        return dialAllowed(HappyEyeballs.order(addresses).map { SocketAddress($0, port: port) })
    }

    /// Keeps the candidates the access rules allow; refuses, naming the rule, if none is left.
    private mutating func dialAllowed(_ candidates: [SocketAddress]) -> UpstreamStep {
        guard let policy else { return dial(candidates) }
        var allowed: [SocketAddress] = []
        var refusal: (SocketAddress, String)?
        for candidate in candidates {
            let verdict = policy.verdict(for: candidate.address, port: candidate.port, keyID: request?.keyID)
            if verdict.allowed {
                allowed.append(candidate)
                if verdict.proxyProtocol { proxyHeaderFor.insert(candidate) }
            } else if refusal == nil {
                refusal = (candidate, verdict.rule)
            }
        }
        guard !allowed.isEmpty else {
            state = .failed
            let (address, rule) = refusal ?? (candidates.first ?? SocketAddress(.v4([0, 0, 0, 0]), port: 0), "no address")
            let asked = request.map { "\($0.destination)" } ?? "?"
            return .failed(ConvertProtocolError(.notAuthorized, "destination \(asked)\(asked == "\(address)" ? "" : " (\(address))") refused by rule \"\(rule)\""))
        }
        return dial(allowed)
    }

    private mutating func dial(_ candidates: [SocketAddress]) -> UpstreamStep {
        state = .connecting
        return .dial(DialPlan(candidates: candidates, mptcp: request?.wantsMPTCP ?? false, timeout: connectTimeout))
    }

    public mutating func dialed(_ outcome: DialOutcome) -> UpstreamStep {
        guard state == .connecting else { return impossible("dialled") }
        switch outcome {
        case .connected(let address):
            if let member = pool?.member(at: address) { leases.append(member.lease()) }
            if proxyHeaderFor.contains(address) {
                state = .sendingProxyHeader
                return .send(.outbound, ProxyProtocolV2.encode(.init(source: request?.originalSource, destination: address)))
            }
            state = .connected
            return .connected
        case .failed(let errno):
            state = .failed
            return .failed(Self.failure(errno: errno, destination: request?.destination))
        }
    }

    public mutating func sent(_ side: Side) -> UpstreamStep {
        guard state == .sendingProxyHeader, side == .outbound else { return impossible("send completed on \(side)") }
        state = .connected
        return .connected
    }

    /// RFC 8803 §5.2.8's codes for a failed connect: a RST is Connection Reset; unreachable
    /// networks and hosts are Destination Unreachable with the ICMP code (0 net, 1 host) as value;
    /// no answer at all is our private Destination Timed Out (97's value must be an ICMP code);
    /// a lack of descriptors or memory here is Resource Exceeded.
    static func failure(errno: Int32, destination: Destination?) -> ConvertProtocolError {
        let code: ConvertErrorCode
        var value: [UInt8] = []
        switch errno {
        case ECONNREFUSED, ECONNRESET: code = .connectionReset
        case ENETUNREACH, ENETDOWN: code = .destinationUnreachable; value = [0]
        case EHOSTUNREACH, EHOSTDOWN: code = .destinationUnreachable; value = [1]
        case ETIMEDOUT: code = .destinationTimedOut
        case EMFILE, ENFILE, ENOBUFS, ENOMEM: code = .resourceExceeded
        default: code = .networkFailure
        }
        return ConvertProtocolError(code, "connect to \(destination.map { "\($0)" } ?? "?"): \(String(cString: strerror(errno)))", value: value)
    }

    public mutating func received(_ side: Side, _ bytes: [UInt8]) -> UpstreamStep { impossible("\(bytes.count) bytes on \(side)") }

    public mutating func closed(_ side: Side) -> UpstreamStep {
        guard state == .sendingProxyHeader, side == .outbound else { return impossible("\(side) closed") }
        state = .failed
        return .failed(ConvertProtocolError(.connectionReset, "\(request.map { "\($0.destination)" } ?? "?") closed before the PROXY header was sent"))
    }

    private mutating func impossible(_ event: String) -> UpstreamStep {
        let before = state
        state = .failed
        return .failed(ConvertProtocolError(.networkFailure, "internal error: DirectUpstream got \(event) in state \(before)"))
    }
}

/// RFC 8305 §4: addresses from a lookup are tried interleaving the families, starting with
/// the family the resolver put first (its RFC 6724 preference), one address of that family,
/// then one of the other, and so on; so neither a broken IPv6 path nor a broken IPv4 one
/// costs more than an attempt delay.
public enum HappyEyeballs {
    public static func order(_ addresses: [IPAddress]) -> [IPAddress] {
        var unique: [IPAddress] = []
        for address in addresses.map(\.normalized) where !unique.contains(address) { unique.append(address) }
        guard let first = unique.first else { return [] }
        var preferred = unique.filter { $0.family == first.family }
        var other = unique.filter { $0.family != first.family }
        var ordered: [IPAddress] = []
        while !preferred.isEmpty || !other.isEmpty {
            if !preferred.isEmpty { ordered.append(preferred.removeFirst()) }
            if !other.isEmpty { ordered.append(other.removeFirst()) }
        }
        return ordered
    }
}
