import ConvertProtocol
import DataPlane
import Glibc

/// The server side of one connection before relaying, as a state machine: bytes, connect
/// results and deadlines in; actions out. The connection object only carries them out, so
/// every decision here is testable without sockets.
public struct ServerHandshake {
    public enum State: Equatable {
        /// Reading the Convert request.
        case readingRequest
        /// Connecting to the destination.
        case connecting(SocketAddress)
        /// Sending the success reply; relaying starts once it is out.
        case replyingSuccess
        /// Sending an error reply; the connection closes once it is out.
        case replyingError(ConvertProtocolError)
        case relaying
        case closed
    }

    public enum Action: Equatable {
        /// Read at most this many bytes (exact framing: never read past the request, so the
        /// client's first data stays in the socket for the relay).
        case read(upTo: Int)
        case connect(SocketAddress)
        /// Send these bytes; then `replySent()`.
        case send([UInt8])
        case startRelay
        /// Close; `reason` is logged.
        case close(CloseReason)
    }

    public private(set) var state: State = .readingRequest
    private var reader = ConvertFrameReader()
    public private(set) var keyID: String?
    private let authenticator: ConvertAuthenticator

    public init(authenticator: ConvertAuthenticator) {
        self.authenticator = authenticator
    }

    /// What to read first: the fixed header.
    public func start() -> Action { .read(upTo: reader.bytesNeeded) }

    /// Bytes read from the client (never more than the last `.read` asked for).
    public mutating func received(_ bytes: [UInt8], now: UInt64, monotonicNow: UInt64 = monotonicMilliseconds()) -> Action {
        guard case .readingRequest = state else {
            return .close(.rejected(ConvertProtocolError(.malformedMessage, "bytes received in state \(state)")))
        }
        do {
            guard let raw = try reader.consume(bytes) else { return .read(upTo: reader.bytesNeeded) }
            let decoded = try ConvertMessage.decode(raw)
            let request = try ConvertRequest(decoded.message)
            keyID = try authenticator.authenticate(decoded, wallNow: now, monotonicNow: monotonicNow)
            guard case .address(let destination) = request.destination else {
                throw ConvertProtocolError(.unsupportedMessage, "request names no destination address")
            }
            state = .connecting(destination)
            return .connect(destination)
        } catch {
            return reject(error)
        }
    }

    /// The client closed (EOF) before sending a whole request.
    public mutating func peerClosed() -> Action {
        state = .closed
        return .close(.peerClosedDuringHandshake)
    }

    /// The outcome of connecting to the destination: 0 on success, or errno.
    public mutating func connectFinished(errno error: Int32) -> Action {
        guard case .connecting(let destination) = state else { return .close(.shutdown) }
        if error == 0 {
            state = .replyingSuccess
            return .send(encode(.success()))
        }
        let code: ConvertErrorCode
        switch error {
        case ECONNREFUSED, ECONNRESET: code = .connectionReset
        case ENETUNREACH, EHOSTUNREACH, ETIMEDOUT, EHOSTDOWN, ENETDOWN: code = .destinationUnreachable
        case EMFILE, ENFILE, ENOBUFS, ENOMEM: code = .resourceExceeded
        default: code = .networkFailure
        }
        let failure = ConvertProtocolError(code, "connect to \(destination): \(String(cString: strerror(error)))")
        state = .replyingError(failure)
        return .send(encode(.failure(code)))
    }

    /// The reply has been written completely.
    public mutating func replySent() -> Action {
        switch state {
        case .replyingSuccess:
            state = .relaying
            return .startRelay
        case .replyingError(let error):
            state = .closed
            return .close(.rejected(error))
        default:
            return .close(.shutdown)
        }
    }

    /// The handshake deadline passed (slowloris, or a destination that never answers).
    public mutating func timedOut() -> Action {
        switch state {
        case .readingRequest:
            state = .closed
            return .close(.handshakeTimeout)
        case .connecting(let destination):
            let failure = ConvertProtocolError(.destinationUnreachable, "connect to \(destination): no answer before the deadline")
            state = .replyingError(failure)
            return .send(encode(.failure(.destinationUnreachable)))
        case .replyingSuccess, .replyingError:
            state = .closed
            return .close(.handshakeTimeout)
        case .relaying, .closed:
            return .close(.shutdown)
        }
    }

    private mutating func reject(_ error: Error) -> Action {
        let failure = (error as? ConvertProtocolError) ?? ConvertProtocolError(.malformedMessage, "\(error)")
        state = .replyingError(failure)
        return .send(encode(.failure(for: failure, received: reader.received)))
    }

    private func encode(_ message: ConvertMessage) -> [UInt8] {
        // Replies are one short TLV: encoding cannot exceed the size limits.
        (try? message.encoded()) ?? []
    }
}
