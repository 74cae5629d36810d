import ConvertProtocol
import DataPlane
import Glibc

/// The server's upstream: reach the destination with plain TCP (or MPTCP when the client asked),
/// resolving a host name first, trying the addresses in Happy Eyeballs order.
public struct DirectUpstream: Upstream {
    public enum State: Equatable { case idle, resolving, connecting, connected, failed }

    public private(set) var state: State = .idle
    private let connectTimeout: UInt64
    private var request: ConnectRequest?

    public init(connectTimeout: UInt64) {
        self.connectTimeout = connectTimeout
    }

    public mutating func start(_ request: ConnectRequest, wallMilliseconds: UInt64) -> UpstreamStep {
        guard state == .idle else { return impossible("start") }
        self.request = request
        switch request.destination {
        case .address(let address):
            return dial([address])
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
        return dial(HappyEyeballs.order(addresses).map { SocketAddress($0, port: port) })
    }

    private mutating func dial(_ candidates: [SocketAddress]) -> UpstreamStep {
        state = .connecting
        return .dial(DialPlan(candidates: candidates, mptcp: request?.wantsMPTCP ?? false, timeout: connectTimeout))
    }

    public mutating func dialed(_ outcome: DialOutcome) -> UpstreamStep {
        guard state == .connecting else { return impossible("dialled") }
        switch outcome {
        case .connected:
            state = .connected
            return .connected
        case .failed(let errno):
            state = .failed
            return .failed(Self.failure(errno: errno, destination: request?.destination))
        }
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
    public mutating func closed(_ side: Side) -> UpstreamStep { impossible("\(side) closed") }
    public mutating func sent(_ side: Side) -> UpstreamStep { impossible("send completed on \(side)") }

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
