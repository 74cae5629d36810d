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
}

/// The TLV types this implementation knows (IANA "Convert TLVs").
public enum ConvertTLVType: UInt8, Sendable {
    case info = 1
    case connect = 10
    case extendedTCPHeader = 20
    case supportedTCPExtensions = 21
    case cookie = 22
    case error = 30
}

/// A destination carried in the Connect TLV: port and a 128-bit address, IPv4 as ::ffff:a.b.c.d.
public struct ConvertDestination: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// 16 bytes, network order. IPv4 is mapped (::ffff:a.b.c.d).
    public var address: [UInt8]
    public var port: UInt16

    public init(address16: [UInt8], port: UInt16) {
        precondition(address16.count == 16, "a Connect TLV address is 16 bytes")
        self.address = address16
        self.port = port
    }

    public init(ipv4: (UInt8, UInt8, UInt8, UInt8), port: UInt16) {
        self.address = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ipv4.0, ipv4.1, ipv4.2, ipv4.3]
        self.port = port
    }

    /// The four IPv4 bytes if the address is IPv4-mapped.
    public var ipv4: [UInt8]? {
        address[0..<10].allSatisfy { $0 == 0 } && address[10] == 0xff && address[11] == 0xff
            ? Array(address[12..<16]) : nil
    }

    public var description: String {
        if let v4 = ipv4 {
            return "\(v4[0]).\(v4[1]).\(v4[2]).\(v4[3]):\(port)"
        }
        var groups: [String] = []
        for i in stride(from: 0, to: 16, by: 2) {
            groups.append(String(UInt16(address[i]) << 8 | UInt16(address[i + 1]), radix: 16))
        }
        return "[\(groups.joined(separator: ":"))]:\(port)"
    }
}

/// One TLV of a Convert message.
public enum ConvertTLV: Equatable, Sendable {
    /// Info TLV: the client asks which TCP extensions the converter supports.
    case info
    /// Connect TLV: the destination, and TCP options the client wants on the outgoing SYN.
    case connect(ConvertDestination, tcpOptions: [UInt8])
    /// Extended TCP Header TLV: TCP options (the server's SYN+ACK options in replies).
    case extendedTCPHeader([UInt8])
    /// Supported TCP Extensions TLV: raw list of supported option kinds.
    case supportedTCPExtensions([UInt8])
    /// Cookie TLV: opaque bytes; ours carry the authentication cookie (see ConvertCookie).
    case cookie([UInt8])
    /// Error TLV: code and an 8-bit value (0 where the RFC defines none).
    case error(ConvertErrorCode, value: UInt8)

    public var type: ConvertTLVType {
        switch self {
        case .info: return .info
        case .connect: return .connect
        case .extendedTCPHeader: return .extendedTCPHeader
        case .supportedTCPExtensions: return .supportedTCPExtensions
        case .cookie: return .cookie
        case .error: return .error
        }
    }
}

/// A whole Convert message: the fixed header is implied, the TLVs are listed in order.
public struct ConvertMessage: Equatable, Sendable {
    public var tlvs: [ConvertTLV]

    public init(_ tlvs: [ConvertTLV]) {
        self.tlvs = tlvs
    }

    public var connect: (ConvertDestination, tcpOptions: [UInt8])? {
        for case let .connect(destination, options) in tlvs { return (destination, options) }
        return nil
    }

    public var cookie: [UInt8]? {
        for case let .cookie(bytes) in tlvs { return bytes }
        return nil
    }

    public var error: (ConvertErrorCode, value: UInt8)? {
        for case let .error(code, value) in tlvs { return (code, value) }
        return nil
    }

    /// The converter's reply when the destination accepted the connection: an Extended TCP
    /// Header TLV with no options (user space does not see the server's SYN+ACK options).
    public static let success = ConvertMessage([.extendedTCPHeader([])])

    public static func failure(_ code: ConvertErrorCode, value: UInt8 = 0) -> ConvertMessage {
        ConvertMessage([.error(code, value: value)])
    }
}
