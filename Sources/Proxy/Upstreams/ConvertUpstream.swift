import ConvertProtocol
import DataPlane
import Glibc

/// How the client reaches its server endpoints.
public struct UpstreamEndpoint: Sendable {
    /// In order of preference: new connections go to the first healthy one.
    public var servers: [SocketAddress]
    public var key: ClientKey
    /// Ask for IPPROTO_MPTCP (falls back to TCP where the kernel refuses).
    public var mptcp: Bool
    /// Put the Convert request (and first client bytes) in the SYN with TCP Fast Open.
    public var fastOpen: Bool
    /// Carry the LAN host's address in the request (Original Source TLV) for PROXY v2 at the server.
    public var sendOriginalSource: Bool
    /// SO_RCVBUF of each MPTCP connection to a server (MPTCPReceiveBuffer); 0: the kernel's.
    public var receiveBuffer: Int32 = MPTCPReceiveBuffer.clientDefault

    public init(servers: [SocketAddress], key: ClientKey, mptcp: Bool = true, fastOpen: Bool = true, sendOriginalSource: Bool = true) {
        self.servers = servers
        self.key = key
        self.mptcp = mptcp
        self.fastOpen = fastOpen
        self.sendOriginalSource = sendOriginalSource
    }

    public init(server: SocketAddress, key: ClientKey, mptcp: Bool = true, fastOpen: Bool = true, sendOriginalSource: Bool = true) {
        self.init(servers: [server], key: key, mptcp: mptcp, fastOpen: fastOpen, sendOriginalSource: sendOriginalSource)
    }
}

/// The client's upstream: dial the first healthy server over MPTCP with the signed Convert
/// request (and the LAN host's first bytes) in the SYN, moving on to the next healthy one if it
/// does not answer in time, then read the server's reply exactly. Every attempt's outcome is
/// evidence for the server's health (`ServerEndpoints`); none healthy: refused at once.
public struct ConvertUpstream: Upstream {
    /// Largest first chunk of LAN bytes sent along with the request. Small enough that request
    /// and chunk fit in one SYN (docs/decisions/0002): with a larger first write, Linux 6.18's
    /// passive MPTCP fast open misplaced bytes more often at a server accepting SYN data — the
    /// kernel bug behind decision 0009, why servers refuse SYN data by default.
    public static let earlyDataLimit = 400
    /// The smallest valid reply: the fixed header and one TLV.
    static let smallestReply = ConvertWire.headerLength + 4

    /// After the handshake, LAN bytes that arrived meanwhile go out behind the request before
    /// the reply is read (at most this many): the server relays them as soon as it has
    /// connected, instead of one round trip after its reply reached us.
    static let lateDataLimit = 16_384

    public enum State: Equatable {
        case idle
        case readingEarlyData
        case connecting
        /// Connected: taking what the LAN host has sent since the dial began.
        case readingLateData
        case sendingLateData
        case awaitingReply
        case connected
        case failed
    }

    public private(set) var state: State = .idle
    public private(set) var earlyBytesCarried = 0
    private let endpoint: UpstreamEndpoint
    private let servers: ServerEndpoints
    private let connectTimeout: UInt64
    /// The servers this connection's dial tries, in order; then the one that answered.
    private var planned: [SocketAddress] = []
    private var server: SocketAddress?
    private var request: ConnectRequest?
    private var wallMilliseconds: UInt64 = 0
    private var reader = ConvertFrameReader()

    public init(endpoint: UpstreamEndpoint, servers: ServerEndpoints, connectTimeout: UInt64) {
        self.endpoint = endpoint
        self.servers = servers
        self.connectTimeout = connectTimeout
    }

    /// The server this connection went to (once dialled).
    public var connectedServer: SocketAddress? { server }

    public mutating func start(_ request: ConnectRequest, wallMilliseconds: UInt64) -> UpstreamStep {
        guard state == .idle else { return impossible("start") }
        self.request = request
        self.wallMilliseconds = wallMilliseconds
        if request.mayHaveEarlyData {
            state = .readingEarlyData
            return .readAvailable(.inbound, upTo: Self.earlyDataLimit)
        }
        return dial(earlyData: [])
    }

    /// The signed request, with the early bytes behind it, in the SYN.
    private mutating func dial(earlyData: [UInt8]) -> UpstreamStep {
        guard let request else { return impossible("dial without a request") }
        var tlvs: [ConvertTLV]
        switch request.destination {
        case .address(let address): tlvs = [.connect(address, tcpOptions: [])]
        case .name(let name, let port): tlvs = [.destinationName(name, port: port)]
        }
        if endpoint.sendOriginalSource, let source = request.originalSource { tlvs.append(.originalSource(source)) }
        let signed: [UInt8]
        do {
            // The nonce in one getrandom(2); the library's default draws it in two.
            signed = try ConvertMessage.signedRequest(tlvs, key: endpoint.key, timestamp: wallMilliseconds,
                                                      nonce: kernelRandomBytes(ConvertCookie.nonceLength), earlyData: earlyData)
        } catch {
            state = .failed
            return .failed(error)
        }
        planned = servers.candidates()
        guard !planned.isEmpty else {
            state = .failed
            return .failed(ConvertProtocolError(.networkFailure, "no healthy server (\(servers.servers.map { "\($0)" }.joined(separator: ", ")) all down)"))
        }
        state = .connecting
        earlyBytesCarried = earlyData.count
        return .dial(DialPlan(candidates: planned, mptcp: endpoint.mptcp, fastOpen: endpoint.fastOpen,
                              initialData: signed, receiveBuffer: endpoint.mptcp ? endpoint.receiveBuffer : 0,
                              attemptDelay: servers.settings.attemptTimeout, timeout: connectTimeout, exclusive: true,
                              sources: servers.upstreamSources))
    }

    public mutating func received(_ side: Side, _ bytes: [UInt8]) -> UpstreamStep {
        switch (state, side) {
        case (.readingEarlyData, .inbound):
            return dial(earlyData: bytes)
        case (.readingLateData, .inbound):
            guard !bytes.isEmpty else { return awaitReply() }
            earlyBytesCarried += bytes.count
            state = .sendingLateData
            return .send(.outbound, bytes)
        case (.awaitingReply, .outbound):
            return readReply(bytes)
        default:
            return impossible("\(bytes.count) bytes on \(side)")
        }
    }

    private mutating func awaitReply() -> UpstreamStep {
        state = .awaitingReply
        // Every reply is a header and at least one TLV, 8 bytes: reading those at once never
        // reads a relayed byte (a header-only "reply" is refused below) and saves a read.
        return .read(.outbound, upTo: Self.smallestReply)
    }

    private mutating func readReply(_ bytes: [UInt8]) -> UpstreamStep {
        do throws(ConvertProtocolError) {
            guard let raw = try reader.consume(bytes) else { return .read(.outbound, upTo: reader.bytesNeeded) }
            let message = try ConvertMessage.decode(raw).message
            guard !message.tlvs.isEmpty else {
                throw ConvertProtocolError(.malformedMessage, "the reply carries no TLV")
            }
            switch ConvertReply(message) {
            case .accepted:
                state = .connected
                return .connected
            case .refused(let code, let value):
                state = .failed
                return .failed(ConvertProtocolError(code, "the server refused: \(code) (\(code.rawValue))", value: value, reportedByPeer: true))
            }
        } catch {
            state = .failed
            return .failed(ConvertProtocolError(error.code, "bad reply from the server: \(error.reason)"))
        }
    }

    public mutating func closed(_ side: Side) -> UpstreamStep {
        switch (state, side) {
        case (.readingEarlyData, .inbound):
            // The LAN host sent nothing yet and half-closed: still connect; the relay forwards the FIN.
            return dial(earlyData: [])
        case (.readingLateData, .inbound):
            // Half-closed after its first bytes (or none): the relay sees the EOF and forwards it.
            return awaitReply()
        case (.awaitingReply, .outbound), (.connecting, .outbound), (.sendingLateData, .outbound), (.readingLateData, .outbound):
            state = .failed
            let shown = server.map { "\($0)" } ?? "?"
            if let server { servers.record(server, success: false, evidence: .connection, detail: "closed before its reply") }
            return .failed(ConvertProtocolError(.networkFailure, "the server \(shown) closed before its reply"))
        default:
            return impossible("\(side) closed")
        }
    }

    public mutating func dialed(_ outcome: DialOutcome) -> UpstreamStep {
        guard state == .connecting else { return impossible("dialled") }
        switch outcome {
        case .connected(let address):
            // Attempts run one at a time in order, so every server before this one failed.
            for earlier in planned.prefix(while: { $0 != address }) {
                servers.record(earlier, success: false, evidence: .connection, detail: "no connection within \(servers.settings.attemptTimeout) ms")
            }
            servers.record(address, success: true, evidence: .connection, detail: "connected")
            server = address
            if request?.mayHaveEarlyData == true {
                // A client-speaks-first protocol's request usually lands during the handshake.
                // Sending it now is safe: the server reads exactly its request, leaves what
                // follows in the socket, relays it after success and discards it after an error.
                state = .readingLateData
                return .readAvailable(.inbound, upTo: Self.lateDataLimit)
            }
            return awaitReply()
        case .failed(let errno):
            state = .failed
            // The dial's deadline may have come before every server was tried.
            let tried = min(planned.count, 1 + Int(connectTimeout / max(1, servers.settings.attemptTimeout)))
            for each in planned.prefix(tried) { servers.record(each, success: false, evidence: .connection, detail: String(cString: strerror(errno))) }
            let shown = planned.prefix(tried).map { "\($0)" }.joined(separator: ", ")
            return .failed(ConvertProtocolError(.networkFailure, "connect to the server\(tried == 1 ? "" : "s") \(shown): \(String(cString: strerror(errno)))"))
        }
    }

    public mutating func sent(_ side: Side) -> UpstreamStep {
        guard state == .sendingLateData, side == .outbound else { return impossible("send completed on \(side)") }
        return awaitReply()
    }
    public mutating func resolved(_ addresses: [IPAddress], error: String?) -> UpstreamStep { impossible("resolved") }

    private mutating func impossible(_ event: String) -> UpstreamStep {
        let before = state
        state = .failed
        return .failed(ConvertProtocolError(.networkFailure, "internal error: ConvertUpstream got \(event) in state \(before)"))
    }
}
