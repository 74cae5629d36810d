import Glibc

/// An IPv4 or IPv6 address, network byte order: the one address type of the project, used by
/// socket addresses and by netlink (endpoints, routes, rules, events).
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4([UInt8])   // 4 bytes
    case v6([UInt8])   // 16 bytes

    /// Parses a bare IPv4 or IPv6 address.
    public init?(parsing text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self = .v4(withUnsafeBytes(of: &v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self = .v6(withUnsafeBytes(of: &v6) { Array($0) })
            return
        }
        return nil
    }

    public var family: Int32 {
        switch self {
        case .v4: return AF_INET
        case .v6: return AF_INET6
        }
    }

    public var bytes: [UInt8] {
        switch self {
        case .v4(let b), .v6(let b): return b
        }
    }

    /// Link-local IPv6 (fe80::/10) and IPv4 169.254/16: no uplink is reached through them.
    public var isLinkLocal: Bool {
        switch self {
        case .v4(let b): return b[0] == 169 && b[1] == 254
        case .v6(let b): return b[0] == 0xfe && (b[1] & 0xc0) == 0x80
        }
    }

    public var description: String {
        switch self {
        case .v4(let b): return "\(b[0]).\(b[1]).\(b[2]).\(b[3])"
        case .v6(let b):
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: b) }
            inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count))
            return String(cString: buffer)
        }
    }
}
