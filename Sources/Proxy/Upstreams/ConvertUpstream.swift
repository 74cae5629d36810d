import ConvertProtocol
import DataPlane
import Glibc

/// How the client reaches its server endpoint.
public struct UpstreamEndpoint: Sendable {
    public var server: SocketAddress
    public var key: ClientKey
    /// Ask for IPPROTO_MPTCP (falls back to TCP where the kernel refuses).
    public var mptcp: Bool
    /// Put the Convert request (and first client bytes) in the SYN with TCP Fast Open.
    public var fastOpen: Bool
    /// Carry the LAN host's address in the request (Original Source TLV) for PROXY v2 at the server.
    public var sendOriginalSource: Bool

    public init(server: SocketAddress, key: ClientKey, mptcp: Bool = true, fastOpen: Bool = true, sendOriginalSource: Bool = true) {
        self.server = server
        self.key = key
        self.mptcp = mptcp
        self.fastOpen = fastOpen
        self.sendOriginalSource = sendOriginalSource
    }
}

/// The client's upstream: dial the server endpoint over MPTCP with the signed Convert request
/// (and the LAN host's first bytes) in the SYN, then read the server's reply exactly.
public struct ConvertUpstream: Upstream {
    /// Largest first chunk of LAN bytes sent along with the request. Small enough that request
    /// and chunk fit in one SYN (docs/decisions/0002): with a larger first write, Linux 6.18's
    /// passive MPTCP fast open misplaced bytes more often at a server accepting SYN data — the
    /// kernel bug behind decision 0009, why servers refuse SYN data by default.
    public static let earlyDataLimit = 400
    /// The smallest valid reply: the fixed header and one TLV.
    static let smallestReply = ConvertWire.headerLength + 4
    /// Receive buffer of the MPTCP leg (see ConnectionDriver.openAttempt).
    public static let mptcpReceiveBuffer: Int32 = 4 << 20

    public enum State: Equatable {
        case idle
        case readingEarlyData
        case connecting
        case awaitingReply
        case connected
        case failed
    }

    public private(set) var state: State = .idle
    public private(set) var earlyBytesCarried = 0
    private let endpoint: UpstreamEndpoint
    private let connectTimeout: UInt64
    private var request: ConnectRequest?
    private var wallMilliseconds: UInt64 = 0
    private var reader = ConvertFrameReader()

    public init(endpoint: UpstreamEndpoint, connectTimeout: UInt64) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
    }

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
            signed = try ConvertMessage.signedRequest(tlvs, key: endpoint.key, timestamp: wallMilliseconds)
        } catch {
            state = .failed
            return .failed(error)
        }
        state = .connecting
        earlyBytesCarried = earlyData.count
        return .dial(DialPlan(candidates: [endpoint.server], mptcp: endpoint.mptcp, fastOpen: endpoint.fastOpen,
                              initialData: signed + earlyData, receiveBuffer: endpoint.mptcp ? Self.mptcpReceiveBuffer : 0,
                              timeout: connectTimeout))
    }

    public mutating func received(_ side: Side, _ bytes: [UInt8]) -> UpstreamStep {
        switch (state, side) {
        case (.readingEarlyData, .inbound):
            return dial(earlyData: bytes)
        case (.awaitingReply, .outbound):
            return readReply(bytes)
        default:
            return impossible("\(bytes.count) bytes on \(side)")
        }
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
        case (.awaitingReply, .outbound), (.connecting, .outbound):
            state = .failed
            return .failed(ConvertProtocolError(.networkFailure, "the server \(endpoint.server) closed before its reply"))
        default:
            return impossible("\(side) closed")
        }
    }

    public mutating func dialed(_ outcome: DialOutcome) -> UpstreamStep {
        guard state == .connecting else { return impossible("dialled") }
        switch outcome {
        case .connected:
            state = .awaitingReply
            // Every reply is a header and at least one TLV, 8 bytes: reading those at once never
            // reads a relayed byte (a header-only "reply" is refused below) and saves a read.
            return .read(.outbound, upTo: Self.smallestReply)
        case .failed(let errno):
            state = .failed
            return .failed(ConvertProtocolError(.networkFailure, "connect to the server \(endpoint.server): \(String(cString: strerror(errno)))"))
        }
    }

    public mutating func sent(_ side: Side) -> UpstreamStep { impossible("send completed on \(side)") }
    public mutating func resolved(_ addresses: [IPAddress], error: String?) -> UpstreamStep { impossible("resolved") }

    private mutating func impossible(_ event: String) -> UpstreamStep {
        let before = state
        state = .failed
        return .failed(ConvertProtocolError(.networkFailure, "internal error: ConvertUpstream got \(event) in state \(before)"))
    }
}
