import ConvertProtocol
import DataPlane

/// The server's frontend: read exactly one Convert request (never a relayed byte), check it
/// and its cookie, hand the destination to the upstream, then answer: success (with the
/// Supported TCP Extensions TLV when asked by an Info TLV), or the Error TLV the RFC gives the
/// failure, after which the connection is half-closed and drained so the reply is not overtaken
/// by a reset. A request with only an Info TLV is answered with the capabilities and closed.
public struct ConvertFrontend: Frontend {
    public enum State: Equatable {
        case readingRequest
        case connecting
        case replyingSuccess
        case replyingInfo
        case replyingError(ConvertProtocolError)
        case relaying
        case closed
    }

    /// Wall-clock and monotonic milliseconds (injected so the machine stays testable).
    public typealias Clock = @Sendable () -> (wall: UInt64, monotonic: UInt64)

    public static let systemClock: Clock = { (unixMilliseconds(), monotonicMilliseconds()) }

    public private(set) var state: State = .readingRequest
    public private(set) var request: ConvertRequest?
    private var reader = ConvertFrameReader()
    private let authenticator: ConvertAuthenticator
    private let peer: SocketAddress?
    private let clock: Clock

    /// - Parameter peer: the client's address, the original source when the request names none.
    public init(authenticator: ConvertAuthenticator, peer: SocketAddress?, clock: @escaping Clock = ConvertFrontend.systemClock) {
        self.authenticator = authenticator
        self.peer = peer
        self.clock = clock
    }

    /// What to read first: the fixed header.
    public mutating func start() -> FrontendStep { .read(upTo: reader.bytesNeeded) }

    /// A limit refused the connection at accept: the Error TLV goes out before reading anything.
    public mutating func refused(_ failure: ConvertProtocolError) -> FrontendStep {
        guard state == .readingRequest else { return impossible("refused") }
        return reject(failure)
    }

    public mutating func received(_ bytes: [UInt8]) -> FrontendStep {
        guard state == .readingRequest else { return impossible("\(bytes.count) bytes received") }
        do {
            guard let raw = try reader.consume(bytes) else { return .read(upTo: reader.bytesNeeded) }
            let decoded = try ConvertMessage.decode(raw)
            let request = try ConvertRequest(decoded.message)
            let now = clock()
            let keyID = try authenticator.authenticate(decoded, wallNow: now.wall, monotonicNow: now.monotonic)
            self.request = request
            guard let destination = request.destination else {
                state = .replyingInfo
                return .send(Self.encode(.info))
            }
            state = .connecting
            return .connect(ConnectRequest(destination: destination, originalSource: request.originalSource ?? peer,
                                           keyID: keyID, wantsMPTCP: request.wantsMPTCP))
        } catch {
            return reject(error)
        }
    }

    public mutating func upstreamConnected() -> FrontendStep {
        guard state == .connecting else { return impossible("upstream connected") }
        state = .replyingSuccess
        return .send(Self.encode(.success(info: request?.wantsInfo ?? false)))
    }

    public mutating func upstreamFailed(_ failure: ConvertProtocolError) -> FrontendStep {
        guard state == .connecting else { return impossible("upstream failed") }
        return reject(failure)
    }

    public mutating func sent() -> FrontendStep {
        switch state {
        case .replyingSuccess:
            state = .relaying
            return .relay
        case .replyingInfo:
            state = .closed
            return .close(.infoAnswered, .drainInbound)
        case .replyingError(let error):
            state = .closed
            return .close(.rejected(error), .drainInbound)
        default:
            return impossible("send completed")
        }
    }

    /// The client closed (EOF) before sending a whole request.
    public mutating func inboundClosed() -> FrontendStep {
        state = .closed
        return .close(.peerClosedDuringHandshake, .reset)
    }

    /// The handshake deadline passed: a slowloris request is cut off without a reply; a
    /// destination that never answered is reported as timed out.
    public mutating func timedOut() -> FrontendStep {
        switch state {
        case .readingRequest:
            state = .closed
            return .close(.handshakeTimeout, .reset)
        case .connecting:
            return reject(ConvertProtocolError(.destinationTimedOut, "no answer from the destination before the handshake deadline"))
        default:
            state = .closed
            return .close(.handshakeTimeout, .reset)
        }
    }

    private mutating func reject(_ error: ConvertProtocolError) -> FrontendStep {
        state = .replyingError(error)
        return .send(Self.encode(.failure(for: error, received: reader.received)))
    }

    private static func encode(_ message: ConvertMessage) -> [UInt8] {
        // Replies are built here from short TLVs, and echoes are cut to fit: encoding cannot fail.
        (try? message.encoded()) ?? [ConvertWire.version, 2, 0x22, 0x63, 30, 1, ConvertErrorCode.networkFailure.rawValue, 0]
    }

    private mutating func impossible(_ event: String) -> FrontendStep {
        let before = state
        state = .closed
        return .close(.internalError("ConvertFrontend: \(event) in state \(before)"), .reset)
    }
}
