import NetworkTypes

/// PROXY protocol version 2 (HAProxy's binary header): sent first on a connection to an origin
/// server so it learns the real client's address instead of the proxy's. Only what a TCP proxy
/// needs: the PROXY command with TCP over IPv4 or IPv6 (mixed families are sent as IPv6, IPv4
/// mapped), no TLVs; and LOCAL for a connection the proxy opens for itself (health checks).
public enum ProxyProtocolV2 {
    /// The 12-byte signature that opens every v2 header.
    public static let signature: [UInt8] = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]

    public struct Header: Equatable, Sendable {
        /// nil: LOCAL (no addresses).
        public var source: SocketAddress?
        public var destination: SocketAddress?

        public init(source: SocketAddress?, destination: SocketAddress?) {
            self.source = source
            self.destination = destination
        }
    }

    public static func encode(_ header: Header) -> [UInt8] {
        guard let source = header.source, let destination = header.destination else {
            return signature + [0x20, 0x00, 0x00, 0x00]  // version 2, LOCAL, UNSPEC, no address block
        }
        let bothV4 = source.family == destination.family && source.address.bytes.count == 4
        var out = signature + [0x21]  // version 2, PROXY
        if bothV4 {
            out += [0x11, 0x00, 12]  // TCP over IPv4, 12 address bytes
            out += source.address.bytes
            out += destination.address.bytes
        } else {
            out += [0x21, 0x00, 36]  // TCP over IPv6, 36 address bytes
            out += source.address.wire16 + destination.address.wire16
        }
        out += [UInt8(source.port >> 8), UInt8(source.port & 0xff), UInt8(destination.port >> 8), UInt8(destination.port & 0xff)]
        return out
    }

    public enum DecodeError: Error, Equatable { case truncated, badSignature, badVersion(UInt8), unsupportedFamily(UInt8), badLength }

    /// Decodes a header at the start of `bytes`; returns it and its length in bytes.
    public static func decode(_ bytes: [UInt8]) throws(DecodeError) -> (Header, length: Int) {
        guard bytes.count >= 16 else { throw .truncated }
        guard Array(bytes[0..<12]) == signature else { throw .badSignature }
        guard bytes[12] >> 4 == 2 else { throw .badVersion(bytes[12]) }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count - 16 >= length else { throw .truncated }
        let body = Array(bytes[16..<(16 + length)])
        if bytes[12] & 0x0f == 0 { return (Header(source: nil, destination: nil), 16 + length) }
        func port(_ at: Int) -> UInt16 { UInt16(body[at]) << 8 | UInt16(body[at + 1]) }
        switch bytes[13] {
        case 0x11:
            guard body.count >= 12 else { throw .badLength }
            return (Header(source: SocketAddress(.v4(AddressBytes(body[0..<4])), port: port(8)),
                           destination: SocketAddress(.v4(AddressBytes(body[4..<8])), port: port(10))), 16 + length)
        case 0x21:
            guard body.count >= 36 else { throw .badLength }
            return (Header(source: SocketAddress(IPAddress(wire16: body[0..<16]), port: port(32)),
                           destination: SocketAddress(IPAddress(wire16: body[16..<32]), port: port(34))), 16 + length)
        default:
            throw .unsupportedFamily(bytes[13])
        }
    }
}
