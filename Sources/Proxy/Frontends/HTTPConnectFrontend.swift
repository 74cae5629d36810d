import ConvertProtocol
import DataPlane
import ProxyProtocols

/// The HTTP CONNECT frontend: looks at what the client has queued until the header block's
/// empty line is there (`.peek`), then reads exactly the header, so bytes sent right behind it
/// (a TLS ClientHello from a client that does not wait for the 200) stay for the relay. With
/// users configured, `Proxy-Authorization: Basic` is required (407 otherwise). Failures are
/// answered with the status a proxy gives them and the connection is closed.
public struct HTTPConnectFrontend: Frontend {
    public enum State: Equatable {
        case peekingHeader
        case readingHeader(length: Int)
        case connecting
        case replyingSuccess
        case replyingError(ConvertProtocolError)
        case relaying
        case closed
    }

    public private(set) var state: State = .peekingHeader
    private var header: [UInt8] = []
    private let users: ProxyUsers?
    private let peer: SocketAddress?

    public init(users: ProxyUsers?, peer: SocketAddress?) {
        self.users = users
        self.peer = peer
    }

    public mutating func start() -> FrontendStep { .peek(upTo: HTTPConnect.maximumHeaderLength) }

    public mutating func refused(_ failure: ConvertProtocolError) -> FrontendStep {
        state = .closed
        return .close(.rejected(failure), .reset)
    }

    public mutating func received(_ bytes: [UInt8]) -> FrontendStep {
        do throws(HTTPConnect.Failure) {
            switch state {
            case .peekingHeader:
                guard let length = try HTTPConnect.headerLength(bytes) else {
                    return .peek(upTo: HTTPConnect.maximumHeaderLength)
                }
                state = .readingHeader(length: length)
                return .read(upTo: length)
            case .readingHeader(let length):
                header += bytes
                guard header.count >= length else { return .read(upTo: length - header.count) }
                let request = try HTTPConnect.parse(header)
                if let users {
                    guard let credentials = request.credentials else {
                        throw HTTPConnect.Failure(.proxyAuthenticationRequired, "no Proxy-Authorization and users are required")
                    }
                    guard users.accepts(username: credentials.username, password: credentials.password) else {
                        throw HTTPConnect.Failure(.proxyAuthenticationRequired, "user \(PeerText.escaped(bytes: credentials.username)) not accepted")
                    }
                }
                state = .connecting
                return .connect(ConnectRequest(destination: request.destination, originalSource: peer))
            default:
                return impossible("\(bytes.count) bytes received")
            }
        } catch {
            let code: ConvertErrorCode = error.status == .proxyAuthenticationRequired ? .notAuthorized : .malformedMessage
            return reply(error.status, ConvertProtocolError(code, "HTTP CONNECT: \(error.reason)"))
        }
    }

    public mutating func sent() -> FrontendStep {
        switch state {
        case .replyingSuccess:
            state = .relaying
            return .relay
        case .replyingError(let error):
            state = .closed
            return .close(.rejected(error), .drainInbound)
        default:
            return impossible("send completed")
        }
    }

    public mutating func upstreamConnected() -> FrontendStep {
        guard state == .connecting else { return impossible("upstream connected") }
        state = .replyingSuccess
        return .send(HTTPConnect.response(.ok))
    }

    public mutating func upstreamFailed(_ failure: ConvertProtocolError) -> FrontendStep {
        guard state == .connecting else { return impossible("upstream failed") }
        return reply(Self.status(for: failure.code), failure)
    }

    public mutating func inboundClosed() -> FrontendStep {
        state = .closed
        return .close(.peerClosedDuringHandshake, .reset)
    }

    public mutating func timedOut() -> FrontendStep {
        switch state {
        case .connecting:
            return upstreamFailed(ConvertProtocolError(.destinationTimedOut, "no answer before the handshake deadline"))
        case .peekingHeader, .readingHeader:
            // A client that never finishes its header (slowloris) is told so, then closed.
            return reply(.badRequest, ConvertProtocolError(.malformedMessage, "HTTP CONNECT: no complete header before the deadline"))
        default:
            state = .closed
            return .close(.handshakeTimeout, .reset)
        }
    }

    /// The status for a failure said in Convert's vocabulary.
    public static func status(for code: ConvertErrorCode) -> HTTPConnect.Status {
        switch code {
        case .notAuthorized: return .forbidden
        case .destinationTimedOut: return .gatewayTimeout
        case .resourceExceeded: return .serviceUnavailable
        default: return .badGateway
        }
    }

    private mutating func reply(_ status: HTTPConnect.Status, _ error: ConvertProtocolError) -> FrontendStep {
        state = .replyingError(error)
        return .send(HTTPConnect.response(status))
    }

    private mutating func impossible(_ event: String) -> FrontendStep {
        let before = state
        state = .closed
        return .close(.internalError("HTTPConnectFrontend: \(event) in state \(before)"), .reset)
    }
}
