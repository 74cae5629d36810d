import ConvertProtocol
import DataPlane
import MPTCPKernel

/// Why a proxied connection ended. One per connection, logged with its byte counts.
public enum CloseReason: Equatable, Sendable, CustomStringConvertible {
    /// Both directions delivered their EOF.
    case completed
    /// A request with only an Info TLV was answered with our capabilities (a client's health
    /// check): not a proxied connection, so counted apart and logged at debug level only.
    case infoAnswered
    case idleTimeout
    case handshakeTimeout
    /// The peer closed before the handshake finished.
    case peerClosedDuringHandshake
    /// The server refused the request (this end sent the error reply).
    case rejected(ConvertProtocolError)
    /// The server answered our request with an Error TLV.
    case refusedByServer(ConvertErrorCode)
    /// The next hop could not be reached (said in Convert's vocabulary: code and reason).
    case upstreamFailed(ConvertProtocolError)
    /// Connecting to the next hop failed.
    case connectFailed(SystemError)
    case ioError(SystemError)
    /// The service shut down before the connection finished.
    case shutdown
    /// A state machine got an event its state cannot have: a bug, logged as an error.
    case internalError(String)

    /// The reason without its details, for a metric label and the log: a small, fixed set.
    public var kind: String {
        switch self {
        case .completed: return "completed"
        case .infoAnswered: return "info-answered"
        case .idleTimeout: return "idle-timeout"
        case .handshakeTimeout: return "handshake-timeout"
        case .peerClosedDuringHandshake: return "peer-closed-during-handshake"
        case .rejected: return "rejected"
        case .refusedByServer: return "refused-by-server"
        case .upstreamFailed: return "upstream-failed"
        case .connectFailed: return "connect-failed"
        case .ioError: return "io-error"
        case .shutdown: return "shutdown"
        case .internalError: return "internal-error"
        }
    }

    public var description: String {
        switch self {
        case .completed, .infoAnswered, .idleTimeout, .handshakeTimeout, .peerClosedDuringHandshake, .shutdown:
            return kind
        case .rejected(let error): return "rejected: \(error)"
        case .refusedByServer(let code): return "refused-by-server: \(code) (\(code.rawValue))"
        case .upstreamFailed(let error): return "upstream-failed: \(error)"
        case .connectFailed(let error): return "connect-failed: \(error)"
        case .ioError(let error): return "io-error: \(error)"
        case .internalError(let what): return "internal-error: \(what)"
        }
    }
}

/// The end of one proxied connection: what the log line and the tests see.
public struct ConnectionRecord: Sendable, CustomStringConvertible {
    public enum Role: String, Sendable { case client, server }

    public var role: Role
    /// The peer that connected to us: the LAN host (client) or the gateway (server).
    public var peer: SocketAddress?
    /// Where it went (nil until the frontend knew).
    public var target: Destination?
    /// `target` printed, as every log line and metric prints it (formatted only when read).
    public var destination: String { target?.description ?? "?" }
    public var keyID: String?
    /// Bytes delivered towards the destination, and back towards the peer.
    public var bytesUp: UInt64 = 0
    public var bytesDown: UInt64 = 0
    public var durationMilliseconds: UInt64 = 0
    /// The MPTCP leg's transport, read from the kernel just before close.
    public var transport: TransportKind = .tcp
    public var reason: CloseReason = .completed

    public var description: String {
        "\(role) \(peer.map { "\($0)" } ?? "?") -> \(destination)\(keyID.map { " key=\(PeerText.escaped($0))" } ?? "") up=\(bytesUp) down=\(bytesDown) duration=\(durationMilliseconds)ms transport=\(transport) subflows=\(transport.subflows) reason=\(reason)"
    }
}

extension CloseReason {
    /// How a client frontend records an upstream that could not deliver: the server's own
    /// refusal (an Error TLV it sent), or a failure to reach or understand it.
    init(upstreamFailure failure: ConvertProtocolError) {
        self = failure.reportedByPeer ? .refusedByServer(failure.code) : .upstreamFailed(failure)
    }
}
