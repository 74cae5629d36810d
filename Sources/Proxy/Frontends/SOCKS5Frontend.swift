import ConvertProtocol
import DataPlane
import ProxyProtocols

/// The SOCKS5 frontend (RFC 1928, with RFC 1929 username/password when users are configured):
/// greeting → method → (credentials) → CONNECT request → the destination, as an address or a
/// host name the server endpoint resolves. Every message is read exactly (`SOCKS5.*Length`),
/// so bytes the application sends right behind its request stay in the socket for the relay.
/// Failures get the reply code the RFC gives them; BIND and UDP ASSOCIATE get Command Not
/// Supported. A peer that does not speak SOCKS5 at all is reset without a reply.
public struct SOCKS5Frontend: Frontend {
    public enum State: Equatable {
        case readingGreeting
        case choosingMethod(authenticate: Bool)
        case readingCredentials
        case answeringCredentials(accepted: Bool)
        case readingRequest
        case connecting
        case replyingSuccess
        case replyingError(ConvertProtocolError)
        case relaying
        case closed
    }

    public private(set) var state: State = .readingGreeting
    private var received: [UInt8] = []
    private let users: ProxyUsers?
    private let peer: SocketAddress?
    private var username = ""

    /// - Parameter users: ask for and check credentials (nil: no authentication).
    public init(users: ProxyUsers?, peer: SocketAddress?) {
        self.users = users
        self.peer = peer
    }

    public mutating func start() -> FrontendStep { .read(upTo: 2) }

    public mutating func refused(_ failure: ConvertProtocolError) -> FrontendStep {
        state = .closed
        return .close(.rejected(failure), .reset)
    }

    public mutating func received(_ bytes: [UInt8]) -> FrontendStep {
        received += bytes
        do throws(SOCKS5.Failure) {
            switch state {
            case .readingGreeting:
                guard let length = try SOCKS5.greetingLength(prefix: received[...]) else { return .read(upTo: 2 - received.count) }
                guard received.count == length else { return .read(upTo: length - received.count) }
                let methods = try SOCKS5.parseGreeting(received)
                received = []
                if users != nil {
                    guard methods.contains(SOCKS5.Method.usernamePassword.rawValue) else {
                        return refuseMethod("the client offers no username/password method and users are required")
                    }
                    state = .choosingMethod(authenticate: true)
                    return .send(SOCKS5.methodSelection(.usernamePassword))
                }
                guard methods.contains(SOCKS5.Method.noAuthentication.rawValue) else {
                    return refuseMethod("the client offers no \"no authentication\" method")
                }
                state = .choosingMethod(authenticate: false)
                return .send(SOCKS5.methodSelection(.noAuthentication))
            case .readingCredentials:
                let needed = try SOCKS5.authenticationBytesNeeded(received)
                guard needed == 0 else { return .read(upTo: needed) }
                let credentials = try SOCKS5.parseAuthentication(received)
                received = []
                let accepted = users?.accepts(username: credentials.username, password: credentials.password) ?? false
                username = PeerText.escaped(bytes: credentials.username)
                state = .answeringCredentials(accepted: accepted)
                return .send(SOCKS5.authenticationReply(success: accepted))
            case .readingRequest:
                guard let length = try SOCKS5.requestLength(prefix: received[...]) else {
                    return .read(upTo: SOCKS5.requestHeadLength - received.count)
                }
                guard received.count == length else { return .read(upTo: length - received.count) }
                let request = try SOCKS5.parseRequest(received)
                received = []
                guard request.command == SOCKS5.Command.connect.rawValue else {
                    let name = SOCKS5.Command(rawValue: request.command).map { $0 == .bind ? "BIND" : "UDP ASSOCIATE" } ?? "command \(request.command)"
                    throw SOCKS5.Failure(.commandNotSupported, "\(name) is not supported (CONNECT only)")
                }
                state = .connecting
                return .connect(ConnectRequest(destination: request.destination, originalSource: peer))
            default:
                return impossible("\(bytes.count) bytes received")
            }
        } catch {
            return fail(error)
        }
    }

    public mutating func sent() -> FrontendStep {
        switch state {
        case .choosingMethod(let authenticate):
            state = authenticate ? .readingCredentials : .readingRequest
            return .read(upTo: authenticate ? 2 : SOCKS5.requestHeadLength)
        case .answeringCredentials(let accepted):
            guard accepted else {
                state = .closed
                return .close(.rejected(ConvertProtocolError(.notAuthorized, "SOCKS5: user \(username) not accepted")), .drainInbound)
            }
            state = .readingRequest
            return .read(upTo: SOCKS5.requestHeadLength)
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
        return .send(SOCKS5.reply(.succeeded))
    }

    public mutating func upstreamFailed(_ failure: ConvertProtocolError) -> FrontendStep {
        guard state == .connecting else { return impossible("upstream failed") }
        state = .replyingError(failure)
        return .send(SOCKS5.reply(Self.reply(for: failure.code)))
    }

    public mutating func inboundClosed() -> FrontendStep {
        state = .closed
        return .close(.peerClosedDuringHandshake, .reset)
    }

    public mutating func timedOut() -> FrontendStep {
        guard state == .connecting else {
            state = .closed
            return .close(.handshakeTimeout, .reset)
        }
        return upstreamFailed(ConvertProtocolError(.destinationTimedOut, "no answer before the handshake deadline"))
    }

    /// The SOCKS5 reply for a failure said in Convert's vocabulary (the server's Error TLV, or
    /// this client's own finding such as no healthy server).
    public static func reply(for code: ConvertErrorCode) -> SOCKS5.Reply {
        switch code {
        case .notAuthorized: return .notAllowed
        case .connectionReset: return .connectionRefused
        case .destinationUnreachable, .nameNotResolved: return .hostUnreachable
        case .destinationTimedOut: return .ttlExpired
        case .networkFailure: return .networkUnreachable
        default: return .generalFailure
        }
    }

    private mutating func refuseMethod(_ reason: String) -> FrontendStep {
        state = .replyingError(ConvertProtocolError(.notAuthorized, "SOCKS5: \(reason)"))
        return .send(SOCKS5.methodSelection(.noAcceptable))
    }

    private mutating func fail(_ failure: SOCKS5.Failure) -> FrontendStep {
        let error = ConvertProtocolError(failure.reply == .commandNotSupported ? .unsupportedMessage : .malformedMessage, "SOCKS5: \(failure.reason)")
        guard let reply = failure.reply else {
            state = .closed
            return .close(.rejected(error), .reset)
        }
        state = .replyingError(error)
        return .send(SOCKS5.reply(reply))
    }

    private mutating func impossible(_ event: String) -> FrontendStep {
        let before = state
        state = .closed
        return .close(.internalError("SOCKS5Frontend: \(event) in state \(before)"), .reset)
    }
}
