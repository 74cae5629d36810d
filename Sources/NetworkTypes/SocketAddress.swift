import Glibc

/// An IPv4 or IPv6 socket address. Parses "a.b.c.d:port" and "[v6]:port".
public struct SocketAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public typealias Address = IPAddress

    public var address: Address
    public var port: UInt16

    public init(_ address: Address, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var family: Int32 { address.family }

    /// Parses "1.2.3.4:80", "[::1]:80". Throws a message naming what is wrong.
    public init(parsing text: String) throws(AddressParseError) {
        guard let colon = text.lastIndex(of: ":") else {
            throw AddressParseError("\"\(text)\" has no :PORT")
        }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = UInt16(portText), port != 0 else {
            throw AddressParseError("\"\(text)\": port \"\(portText)\" is not 1...65535")
        }
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            guard let address = IPAddress(parsing: host), case .v6 = address else {
                throw AddressParseError("\"\(text)\": \"\(host)\" is not an IPv6 address")
            }
            self.init(address, port: port)
        } else {
            guard let address = IPAddress(parsing: host), case .v4 = address else {
                throw AddressParseError("\"\(text)\": \"\(host)\" is not an IPv4 address (write IPv6 as [addr]:port)")
            }
            self.init(address, port: port)
        }
    }

    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }

    /// Calls `body` with this address as a `sockaddr`.
    public func withSockAddr<R, E: Error>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws(E) -> R) throws(E) -> R {
        switch address {
        case .v4(let bytes):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            return try withUnsafePointer(to: &sin) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in try body(sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(let bytes):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
            return try withUnsafePointer(to: &sin6) { (p) throws(E) -> R in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(E) -> R in try body(sa, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    /// Reads a `sockaddr_storage` filled by the kernel.
    public init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            let bytes = withUnsafeBytes(of: sin.sin_addr) { AddressBytes($0) }
            self.init(.v4(bytes), port: UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let bytes = withUnsafeBytes(of: sin6.sin6_addr) { AddressBytes($0) }
            // IPv4-mapped peers of dual-stack sockets are IPv4 (one form for logs and rules).
            self.init(IPAddress.v6(bytes).normalized, port: UInt16(bigEndian: sin6.sin6_port))
        default:
            return nil
        }
    }
}

public struct AddressParseError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
