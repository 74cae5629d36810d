import Glibc

/// An IPv4 or IPv6 address, network byte order: the one address type of the project, used by
/// socket addresses, destinations, access rules and netlink (endpoints, routes, rules, events).
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(AddressBytes)   // 4 bytes
    case v6(AddressBytes)   // 16 bytes

    /// Hashes the address as its family and two words. The synthesised hash of the former
    /// `[UInt8]` payload fed each byte to the hasher, one call apiece; the server hashes a
    /// source address a few times per connection (its limits). Equal addresses have equal
    /// words (AddressBytes keeps bytes past its count zero), so equal hashes.
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .v4(let bytes):
            hasher.combine(UInt8(4))
            hasher.combine(bytes.high)
        case .v6(let bytes):
            hasher.combine(UInt8(6))
            hasher.combine(bytes.high)
            hasher.combine(bytes.low)
        }
    }

    /// Parses a bare IPv4 or IPv6 address.
    public init?(parsing text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(withUnsafeBytes(of: &v4) { AddressBytes($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: &v6) { AddressBytes($0) })
            return
        }
        return nil
    }

    /// From 16 bytes as carried on the wire (RFC 8803 Connect TLV, PROXY v2): IPv4-mapped
    /// addresses (::ffff:a.b.c.d) become IPv4, everything else stays IPv6.
    /// (Concrete, not generic: parsed per connection, and an unspecialised generic here cost
    /// more than the rest of the request's decoding.)
    public init(wire16 bytes: ArraySlice<UInt8>) {
        let start = bytes.startIndex
        if bytes.count >= 16, bytes[start..<(start + 10)].allSatisfy({ $0 == 0 }), bytes[start + 10] == 0xff, bytes[start + 11] == 0xff {
            self = .v4(AddressBytes(bytes[(start + 12)..<(start + 16)]))
            return
        }
        var all = AddressBytes(zeros: 16)
        for (index, byte) in bytes.prefix(16).enumerated() { all[index] = byte }
        self = .v6(all)
    }

    public var family: Int32 {
        switch self {
        case .v4: return AF_INET
        case .v6: return AF_INET6
        }
    }

    public var bytes: AddressBytes {
        switch self {
        case .v4(let b), .v6(let b): return b
        }
    }

    /// 16 bytes for the wire: IPv6 as is, IPv4 as ::ffff:a.b.c.d.
    public var wire16: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        appendWire16(to: &out)
        return out
    }

    /// `wire16` appended to `out` in place (the encoder's path: no array of its own).
    public func appendWire16(to out: inout [UInt8]) {
        switch self {
        case .v4(let b):
            for _ in 0..<10 { out.append(0) }
            out.append(0xff)
            out.append(0xff)
            out.append(contentsOf: b)
        case .v6(let b):
            out.append(contentsOf: b)
        }
    }

    /// The IPv4 address an IPv4-mapped IPv6 address stands for (::ffff:a.b.c.d → a.b.c.d);
    /// every other address unchanged. Policy checks compare normalised addresses, so a
    /// destination cannot slip past an IPv4 rule by being written as IPv6.
    public var normalized: IPAddress {
        guard case .v6(let b) = self, b.count == 16, b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xff, b[11] == 0xff else {
            return self
        }
        return .v4(AddressBytes(b[12..<16]))
    }

    /// Link-local IPv6 (fe80::/10) and IPv4 169.254/16: no uplink is reached through them.
    public var isLinkLocal: Bool {
        switch self {
        case .v4(let b): return b[0] == 169 && b[1] == 254
        case .v6(let b): return b[0] == 0xfe && (b[1] & 0xc0) == 0x80
        }
    }

    /// The textual form, IPv6 compressed (RFC 5952, as inet_ntop writes it). Every log line
    /// and metric label prints addresses this one way.
    public var description: String {
        switch self {
        case .v4(let b): return "\(b[0]).\(b[1]).\(b[2]).\(b[3])"
        case .v6(let b):
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: b.prefix(16)) }
            inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count))
            return String(cString: buffer)
        }
    }
}
