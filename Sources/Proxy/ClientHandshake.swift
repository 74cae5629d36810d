import ConvertProtocol

/// The client side of one connection before relaying: send the signed Convert request
/// (with the LAN host's first bytes behind it), then read the server's reply.
/// Pure: events in, actions out.
public struct ClientHandshake {
    public enum State: Equatable {
        case sendingRequest
        case awaitingReply
        case relaying
        case closed
    }

    public enum Action: Equatable {
        case send([UInt8])
        case read(upTo: Int)
        case startRelay
        /// Close both sides; the LAN side with a reset so its host sees the failure at once.
        case close(CloseReason)
    }

    public private(set) var state: State = .sendingRequest
    private var reader = ConvertFrameReader()
    private let request: [UInt8]

    /// - Parameter request: the signed Convert request followed by any first client bytes.
    public init(request: [UInt8]) {
        self.request = request
    }

    public func start() -> Action { .send(request) }

    public mutating func requestSent() -> Action {
        guard state == .sendingRequest else { return .close(.shutdown) }
        state = .awaitingReply
        return .read(upTo: reader.bytesNeeded)
    }

    public mutating func received(_ bytes: [UInt8]) -> Action {
        guard state == .awaitingReply else { return .close(.shutdown) }
        do {
            guard let raw = try reader.consume(bytes) else { return .read(upTo: reader.bytesNeeded) }
            switch ConvertReply(try ConvertMessage.decode(raw).message) {
            case .accepted:
                state = .relaying
                return .startRelay
            case .refused(let code, _):
                state = .closed
                return .close(.refusedByServer(code))
            }
        } catch {
            state = .closed
            return .close(.rejected(error))
        }
    }

    /// The server closed before its reply was complete.
    public mutating func peerClosed() -> Action {
        state = .closed
        return .close(.peerClosedDuringHandshake)
    }

    public mutating func timedOut() -> Action {
        state = .closed
        return .close(.handshakeTimeout)
    }
}
