/// Where a proxied connection goes: an address, or a host name and port that the server
/// endpoint resolves (so DNS answers fit its egress, not the gateway's). The one destination
/// type of the project; `description` is the one way it is printed in logs and metrics.
public enum Destination: Hashable, Sendable, CustomStringConvertible {
    case address(SocketAddress)
    case name(String, port: UInt16)

    public var port: UInt16 {
        switch self {
        case .address(let address): return address.port
        case .name(_, let port): return port
        }
    }

    /// "198.51.100.2:80", "[2001:db8::1]:443" (IPv6 compressed), "example.com:443". Host names
    /// are printed escaped: they may come from a LAN host or a peer.
    public var description: String {
        switch self {
        case .address(let address): return address.description
        case .name(let host, let port): return "\(PeerText.escaped(host)):\(port)"
        }
    }
}

/// Host names as the proxy accepts them (from SOCKS5, HTTP CONNECT and the Convert name TLV):
/// 1-253 bytes of letters, digits, '-', '_' and '.', no empty label, labels of at most 63.
/// Anything else is refused before it reaches a resolver or a log line.
public enum HostName {
    public static let maximumLength = 253

    public static func isValid(_ name: some Collection<UInt8>) -> Bool {
        guard !name.isEmpty, name.count <= maximumLength else { return false }
        var label = 0
        for byte in name {
            switch byte {
            case UInt8(ascii: "."):
                if label == 0 { return false }
                label = 0
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                label += 1
                if label > 63 { return false }
            default:
                return false
            }
        }
        return true
    }
}
