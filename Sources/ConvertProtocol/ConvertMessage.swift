import NetworkTypes

/// RFC 8803 wire format.
///
/// Fixed header (4 bytes): Version (8) = 1, Total Length (8) in 32-bit words including
/// the header and all TLVs, Magic Number (16) = 0x2263. Then TLVs: Type (8),
/// Length (8) in 32-bit words including Type and Length, Value padded to 4 bytes.
/// Exact bytes and a worked example: docs/protocol.md.
public enum ConvertWire {
    public static let version: UInt8 = 1
    public static let magic: UInt16 = 0x2263
    public static let headerLength = 4
    /// Total Length is 8 bits of 32-bit words, so no message exceeds 1020 bytes.
    public static let maximumMessageLength = 255 * 4
    /// TCP option kinds the converter announces in a Supported TCP Extensions TLV: Multipath
    /// TCP (30), the conversion it provides. (Kinds 0, 1 and 2 must not be listed.)
    public static let supportedExtensions: [UInt8] = [30]
}

/// The TLV types this implementation knows (IANA "Convert TLVs"; 192-255 are private use).
public enum ConvertTLVType: UInt8, Sendable {
    case info = 1
    case connect = 10
    case extendedTCPHeader = 20
    case supportedTCPExtensions = 21
    case cookie = 22
    case error = 30
    /// Private use: a destination host name and port for the converter to resolve.
    case destinationName = 192
    /// Private use: the address and port of the host behind the client (for PROXY v2).
    case originalSource = 193
}

/// One TLV of a Convert message.
public enum ConvertTLV: Equatable, Sendable {
    /// Info TLV: the client asks which TCP extensions the converter supports.
    case info
    /// Connect TLV: the destination (IPv4 travels as ::ffff:a.b.c.d and decodes back to IPv4),
    /// and TCP options the client wants on the outgoing SYN.
    case connect(SocketAddress, tcpOptions: [UInt8])
    /// Extended TCP Header TLV: TCP options (the server's SYN+ACK options in replies).
    case extendedTCPHeader([UInt8])
    /// Supported TCP Extensions TLV: raw list of supported option kinds.
    case supportedTCPExtensions([UInt8])
    /// Cookie TLV: opaque bytes; ours carry the authentication cookie (see ConvertCookie).
    case cookie([UInt8])
    /// Error TLV: code and its value bytes (one zero byte where the RFC defines none).
    case error(ConvertErrorCode, value: [UInt8])
    /// Destination Name TLV (private use): host name and port, resolved by the converter.
    case destinationName(String, port: UInt16)
    /// Original Source TLV (private use): the LAN host's address and port.
    case originalSource(SocketAddress)

    public var type: ConvertTLVType {
        switch self {
        case .info: return .info
        case .connect: return .connect
        case .extendedTCPHeader: return .extendedTCPHeader
        case .supportedTCPExtensions: return .supportedTCPExtensions
        case .cookie: return .cookie
        case .error: return .error
        case .destinationName: return .destinationName
        case .originalSource: return .originalSource
        }
    }
}

/// A whole Convert message: the fixed header is implied, the TLVs are listed in order.
public struct ConvertMessage: Equatable, Sendable {
    public var tlvs: [ConvertTLV]

    public init(_ tlvs: [ConvertTLV]) {
        self.tlvs = tlvs
    }

    public var connect: (SocketAddress, tcpOptions: [UInt8])? {
        for case let .connect(destination, options) in tlvs { return (destination, options) }
        return nil
    }

    public var destinationName: (String, port: UInt16)? {
        for case let .destinationName(name, port) in tlvs { return (name, port) }
        return nil
    }

    public var originalSource: SocketAddress? {
        for case let .originalSource(address) in tlvs { return address }
        return nil
    }

    public var cookie: [UInt8]? {
        for case let .cookie(bytes) in tlvs { return bytes }
        return nil
    }

    public var error: (ConvertErrorCode, value: [UInt8])? {
        for case let .error(code, value) in tlvs { return (code, value) }
        return nil
    }

    public var supportedExtensions: [UInt8]? {
        for case let .supportedTCPExtensions(kinds) in tlvs { return kinds }
        return nil
    }

    /// The converter's reply when the destination accepted the connection: an Extended TCP
    /// Header TLV with no options (user space does not see the server's SYN+ACK options),
    /// and the Supported TCP Extensions TLV when the request carried an Info TLV.
    public static func success(info: Bool = false) -> ConvertMessage {
        ConvertMessage([.extendedTCPHeader([])] + (info ? [.supportedTCPExtensions(ConvertWire.supportedExtensions)] : []))
    }

    /// The reply to a request that carries only an Info TLV.
    public static let info = ConvertMessage([.supportedTCPExtensions(ConvertWire.supportedExtensions)])

    public static func failure(_ code: ConvertErrorCode, value: [UInt8] = [0]) -> ConvertMessage {
        ConvertMessage([.error(code, value: value.isEmpty ? [0] : value)])
    }

    /// The Error reply for `error`. Malformed and Unsupported Message echo the received bytes
    /// shifted by one byte, as RFC 8803 §5.2.8 asks, cut so the reply stays within 1020 bytes.
    public static func failure(for error: ConvertProtocolError, received: [UInt8]) -> ConvertMessage {
        if error.code.echoesMessage {
            // 4 (header) + 2 (type, length) + 1 (code) + 1 (shift) + echo <= 1020.
            let room = ConvertWire.maximumMessageLength - 8
            return failure(error.code, value: [0] + received.prefix(room))
        }
        return failure(error.code, value: error.value)
    }
}
