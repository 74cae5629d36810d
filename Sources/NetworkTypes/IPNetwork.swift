/// An address prefix (CIDR), e.g. 10.0.0.0/8 or fc00::/7: what access rules and bypass lists
/// match destinations against.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The network address with the host bits cleared.
    public let address: IPAddress
    public let prefixLength: Int

    public init(_ address: IPAddress, prefixLength: Int) {
        let bits = address.bytes.count * 8
        let length = min(max(prefixLength, 0), bits)
        self.prefixLength = length
        self.address = IPNetwork.masked(address, length)
    }

    /// Parses "10.0.0.0/8", "fe80::/10" or a bare address (a /32 or /128). The prefix must not
    /// exceed the family's width; host bits set beyond it are an error, so `10.0.5.1/24` is not
    /// silently read as 10.0.5.0/24.
    public init(parsing text: String) throws(AddressParseError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parsing: String(parts[0])) else {
            throw AddressParseError("\"\(text)\": \"\(parts[0])\" is not an IP address")
        }
        let bits = address.bytes.count * 8
        var length = bits
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...bits).contains(parsed) else {
                throw AddressParseError("\"\(text)\": prefix length \"\(parts[1])\" is not 0...\(bits)")
            }
            length = parsed
        }
        let network = IPNetwork(address, prefixLength: length)
        guard network.address == address else {
            throw AddressParseError("\"\(text)\": host bits are set beyond /\(length) (the network is \(network))")
        }
        self = network
    }

    /// Masking a copy of the candidate allocates nothing: its bytes are inline (AddressBytes).
    public func contains(_ candidate: IPAddress) -> Bool {
        guard candidate.family == address.family else { return false }
        return IPNetwork.masked(candidate, prefixLength) == address
    }

    public var description: String { "\(address)/\(prefixLength)" }

    private static func masked(_ address: IPAddress, _ length: Int) -> IPAddress {
        var bytes = address.bytes
        for index in bytes.indices {
            let keep = min(max(length - index * 8, 0), 8)
            bytes[index] &= keep == 8 ? 0xff : ~(0xff >> UInt8(keep))
        }
        switch address {
        case .v4: return .v4(bytes)
        case .v6: return .v6(bytes)
        }
    }
}

/// An inclusive range of ports, e.g. 5432 or 8000-8080.
public struct PortRange: Hashable, Sendable, CustomStringConvertible {
    public let lower: UInt16
    public let upper: UInt16

    public static let all = PortRange(1, 65535)

    public init(_ lower: UInt16, _ upper: UInt16) {
        self.lower = min(lower, upper)
        self.upper = max(lower, upper)
    }

    /// Parses "5432" or "8000-8080" (1...65535, lower ≤ upper).
    public init(parsing text: String) throws(AddressParseError) {
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let lower = UInt16(parts[0]), lower > 0 else {
            throw AddressParseError("\"\(text)\": \"\(parts[0])\" is not a port 1...65535")
        }
        var upper = lower
        if parts.count == 2 {
            guard let parsed = UInt16(parts[1]), parsed > 0 else {
                throw AddressParseError("\"\(text)\": \"\(parts[1])\" is not a port 1...65535")
            }
            upper = parsed
        }
        guard lower <= upper else { throw AddressParseError("\"\(text)\": the range runs backwards") }
        self.init(lower, upper)
    }

    public func contains(_ port: UInt16) -> Bool { lower <= port && port <= upper }

    public var description: String { lower == upper ? "\(lower)" : "\(lower)-\(upper)" }
}
