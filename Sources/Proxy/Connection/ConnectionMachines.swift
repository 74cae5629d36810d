import ConvertProtocol
import DataPlane

// A proxied connection is two pure state machines and one driver (docs/decisions/0003):
// a Frontend owns the accepted socket and yields where to go; an Upstream reaches it; the
// ConnectionDriver carries out what they ask, each action naming its socket, then hands both
// sockets to the splice relay. Client = a frontend (forward, transparent, SOCKS5, HTTP
// CONNECT) + ConvertUpstream; server = ConvertFrontend + DirectUpstream.

/// Which socket of a connection an action is for: the accepted one, or the one we dialled.
public enum Side: Equatable, Sendable {
    case inbound
    case outbound
}

/// What a frontend hands to the upstream once it knows where the connection goes.
public struct ConnectRequest: Equatable, Sendable {
    public var destination: Destination
    /// The host behind the inbound side may already have sent stream bytes (a plain TCP client
    /// of a forward or an intercepted connection): the upstream may carry the first of them
    /// with its own request. Frontends that answer before the host speaks (SOCKS5, HTTP
    /// CONNECT, Convert) leave it false.
    public var mayHaveEarlyData: Bool
    /// The address and port of the host that opened the connection (LAN host), for PROXY v2.
    public var originalSource: SocketAddress?
    /// The authenticated key (server).
    public var keyID: String?
    /// The client asked for Multipath TCP towards the destination (Convert Connect TLV kind 30).
    public var wantsMPTCP: Bool

    public init(destination: Destination, mayHaveEarlyData: Bool = false, originalSource: SocketAddress? = nil,
                keyID: String? = nil, wantsMPTCP: Bool = false) {
        self.destination = destination
        self.mayHaveEarlyData = mayHaveEarlyData
        self.originalSource = originalSource
        self.keyID = keyID
        self.wantsMPTCP = wantsMPTCP
    }
}

/// How a connection's sockets are closed.
public enum CloseStyle: Equatable, Sendable {
    /// RST (SO_LINGER 0): the peer sees a refused or reset connection at once.
    case reset
    /// FIN.
    case graceful
    /// FIN on the inbound socket, then discard what the peer still sends until its EOF (at most
    /// a second): after an error reply, so a RST cannot overtake the reply (RFC 8803 §5).
    case drainInbound
}

/// What a frontend asks for next. Frontends only ever touch the inbound socket.
public enum FrontendStep: Equatable, Sendable {
    /// Read at most this many bytes (exact framing: nothing past the handshake is read).
    case read(upTo: Int)
    /// Look at up to this many queued bytes without consuming them (a header whose end is
    /// only known by its contents); `received` gets everything queued so far, and the frontend
    /// then reads exactly the header's length.
    case peek(upTo: Int)
    /// Send these bytes; then `sent()`.
    case send([UInt8])
    /// The destination is known: start the upstream.
    case connect(ConnectRequest)
    /// The handshake is over on this side: relay.
    case relay
    case close(CloseReason, CloseStyle)
}

/// The accepted side of a connection: bytes in, a destination out, and later the reply that
/// tells the peer how reaching it went. Pure: no sockets, no clocks but those passed in.
public protocol Frontend {
    mutating func start() -> FrontendStep
    /// Instead of `start`: the connection is refused before its handshake (a limit), and the
    /// frontend says so in its protocol.
    mutating func refused(_ failure: ConvertProtocolError) -> FrontendStep
    /// Bytes from the inbound socket after a `.read` (at most what it asked) or a `.peek`.
    mutating func received(_ bytes: [UInt8]) -> FrontendStep
    /// The peer closed before the handshake was complete.
    mutating func inboundClosed() -> FrontendStep
    mutating func sent() -> FrontendStep
    mutating func upstreamConnected() -> FrontendStep
    /// The upstream could not reach the destination; the failure is in Convert's vocabulary
    /// (error code, reason), which each frontend maps to its own protocol's error.
    mutating func upstreamFailed(_ failure: ConvertProtocolError) -> FrontendStep
    /// The handshake deadline passed, whichever machine was at work (the driver has stopped the
    /// upstream): the frontend says what the peer is told.
    mutating func timedOut() -> FrontendStep
}

/// How to open the outbound socket.
public struct DialPlan: Equatable, Sendable {
    /// Addresses to try, in order (RFC 8305 order when they come from a name).
    public var candidates: [SocketAddress]
    public var mptcp: Bool
    /// Put `initialData` in the SYN with TCP Fast Open.
    public var fastOpen: Bool
    /// Bytes to send as soon as the socket exists (in the SYN with TFO).
    public var initialData: [UInt8]
    /// Receive buffer to fix on the socket (0: leave autotuning alone).
    public var receiveBuffer: Int32
    /// Start the next candidate after this long without an answer (RFC 8305 Connection Attempt Delay).
    public var attemptDelay: UInt64
    /// Give up on all candidates after this long.
    public var timeout: UInt64
    /// One attempt at a time: after `attemptDelay` the attempt is closed before the next starts
    /// (servers that each could act on a request carried in the SYN), not raced.
    public var exclusive: Bool
    /// Local addresses to start from, by family (nil or no match: routing chooses).
    public var sources: [IPAddress]

    public init(candidates: [SocketAddress], mptcp: Bool = false, fastOpen: Bool = false, initialData: [UInt8] = [],
                receiveBuffer: Int32 = 0, attemptDelay: UInt64 = 250, timeout: UInt64 = 10_000, exclusive: Bool = false,
                sources: [IPAddress] = []) {
        self.sources = sources
        self.candidates = candidates
        self.mptcp = mptcp
        self.fastOpen = fastOpen
        self.initialData = initialData
        self.receiveBuffer = receiveBuffer
        self.attemptDelay = attemptDelay
        self.timeout = timeout
        self.exclusive = exclusive
    }
}

/// The outcome of a dial.
public enum DialOutcome: Equatable, Sendable {
    /// Connected to this candidate (the initial data, if any, is handed to the socket).
    case connected(SocketAddress)
    /// Every candidate failed; the errno of the last, or ETIMEDOUT when the plan's timeout passed.
    case failed(errno: Int32)
}

/// What an upstream asks for next; every action names its socket.
public enum UpstreamStep: Equatable, Sendable {
    /// Read what is queued on that socket now, up to a limit, without waiting (may be nothing).
    case readAvailable(Side, upTo: Int)
    /// Read at most this many bytes, waiting for them.
    case read(Side, upTo: Int)
    case send(Side, [UInt8])
    case dial(DialPlan)
    case resolve(String, port: UInt16)
    /// Reached: tell the frontend.
    case connected
    case failed(ConvertProtocolError)
}

/// The side that reaches the destination. Pure.
public protocol Upstream {
    /// `wallMilliseconds` is the Unix time, for protocol timestamps.
    mutating func start(_ request: ConnectRequest, wallMilliseconds: UInt64) -> UpstreamStep
    /// Bytes after a read (empty after a `.readAvailable` that found nothing).
    mutating func received(_ side: Side, _ bytes: [UInt8]) -> UpstreamStep
    mutating func closed(_ side: Side) -> UpstreamStep
    mutating func sent(_ side: Side) -> UpstreamStep
    mutating func dialed(_ outcome: DialOutcome) -> UpstreamStep
    mutating func resolved(_ addresses: [IPAddress], error: String?) -> UpstreamStep
    /// What the connection must hold until it ends (a pool member's count, a key's slot).
    var leases: [ConnectionLease] { get }
    /// Stream bytes from the inbound side that the upstream carried itself (the LAN host's
    /// first bytes sent with the request), counted with the relay's.
    var earlyBytesCarried: Int { get }
}

extension Upstream {
    public var leases: [ConnectionLease] { [] }
    public var earlyBytesCarried: Int { 0 }
}
