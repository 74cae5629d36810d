import ConvertProtocol
import DataPlane

/// The frontend of a port forward and of an intercepted (transparent) connection: the
/// destination is known when the connection is accepted — configured, or the original
/// destination the kernel kept — so there is no handshake on this side. It hands the
/// destination over at once, relays when the upstream is through, and resets the LAN
/// connection on any failure so its host sees it at once instead of hanging.
public struct FixedDestinationFrontend: Frontend {
    public enum State: Equatable { case connecting, relaying, closed }

    public private(set) var state: State = .connecting
    private let request: ConnectRequest
    /// Known at accept to be refused (an intercepted connection with no usable destination).
    private let refusal: ConvertProtocolError?

    /// - Parameter source: the LAN host (carried to the server for PROXY v2 when configured).
    public init(destination: Destination, source: SocketAddress?) {
        // The LAN host may already have sent its first bytes: they can ride with the request.
        request = ConnectRequest(destination: destination, mayHaveEarlyData: true, originalSource: source)
        refusal = nil
    }

    /// A connection to reset at once, logged with `failure`.
    public init(refusing failure: ConvertProtocolError, source: SocketAddress?) {
        request = ConnectRequest(destination: .name("refused", port: 0), originalSource: source)
        refusal = failure
    }

    public mutating func start() -> FrontendStep {
        if let refusal { return refused(refusal) }
        return .connect(request)
    }

    public mutating func refused(_ failure: ConvertProtocolError) -> FrontendStep {
        state = .closed
        return .close(.rejected(failure), .reset)
    }

    public mutating func upstreamConnected() -> FrontendStep {
        guard state == .connecting else { return impossible("upstream connected") }
        state = .relaying
        return .relay
    }

    public mutating func upstreamFailed(_ failure: ConvertProtocolError) -> FrontendStep {
        guard state == .connecting else { return impossible("upstream failed") }
        state = .closed
        return .close(CloseReason(upstreamFailure: failure), .reset)
    }

    public mutating func timedOut() -> FrontendStep {
        state = .closed
        return .close(.handshakeTimeout, .reset)
    }

    // This frontend never reads or writes: such an event is a bug of the driver.
    public mutating func received(_ bytes: [UInt8]) -> FrontendStep { impossible("\(bytes.count) bytes received") }
    public mutating func inboundClosed() -> FrontendStep { impossible("inbound closed") }
    public mutating func sent() -> FrontendStep { impossible("send completed") }

    private mutating func impossible(_ event: String) -> FrontendStep {
        let before = state
        state = .closed
        return .close(.internalError("FixedDestinationFrontend: \(event) in state \(before)"), .reset)
    }
}
