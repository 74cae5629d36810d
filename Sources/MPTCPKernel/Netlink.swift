import CMPTCPNetlink
import DataPlane
import Glibc

/// A failed netlink operation: what we asked, errno, and the kernel's own explanation
/// (extended ACK), e.g. `DEL_ADDR id 9: address not found (errno 22)`.
public struct NetlinkError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32
    public var kernelMessage: String

    public var description: String { "\(operation): \(kernelMessage) (errno \(errno))" }

    init(_ operation: String, _ error: mpx_nl_error) {
        self.operation = operation
        self.errno = Int32(error.code)
        var copy = error.message
        self.kernelMessage = withUnsafeBytes(of: &copy) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }

    public init(operation: String, errno: Int32, kernelMessage: String) {
        self.operation = operation
        self.errno = errno
        self.kernelMessage = kernelMessage
    }
}

/// How netlink carries an address: a family byte and 16 bytes (IPv4 in the first 4).
extension IPAddress {
    var familyByte: UInt8 { UInt8(family) }

    init(family: UInt8, raw: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        let (high, low) = withUnsafeBytes(of: raw) {
            (UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)), UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        }
        self = Int32(family) == AF_INET6 ? .v6(AddressBytes(high: high, low: low, count: 16)) : .v4(AddressBytes(high: high, low: low, count: 4))
    }

    var raw16: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) {
        var out: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &out) { $0.copyBytes(from: bytes) }
        return out
    }
}

/// MPTCP endpoint flags (`ip mptcp endpoint ... subflow backup`).
public struct EndpointFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let signal = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_SIGNAL)
    public static let subflow = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_SUBFLOW)
    public static let backup = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_BACKUP)
    public static let fullmesh = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_FULLMESH)
    public static let implicit = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_IMPLICIT)
    public static let laminar = EndpointFlags(rawValue: MPX_PM_ADDR_FLAG_LAMINAR)

    public var description: String {
        let names: [(EndpointFlags, String)] = [(.signal, "signal"), (.subflow, "subflow"), (.backup, "backup"), (.fullmesh, "fullmesh"), (.implicit, "implicit"), (.laminar, "laminar")]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "none" : set.joined(separator: ",")
    }

    /// Parses "subflow,backup".
    public init?(parsing text: String) {
        var flags: EndpointFlags = []
        for word in text.split(separator: ",") {
            switch word.trimmingCharacters() {
            case "signal": flags.insert(.signal)
            case "subflow": flags.insert(.subflow)
            case "backup": flags.insert(.backup)
            case "fullmesh": flags.insert(.fullmesh)
            case "laminar": flags.insert(.laminar)
            default: return nil
            }
        }
        self = flags
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// One MPTCP endpoint of the in-kernel path manager.
public struct MPTCPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var id: UInt8
    public var address: IPAddress
    public var flags: EndpointFlags
    public var interfaceIndex: Int32

    public init(id: UInt8 = 0, address: IPAddress, flags: EndpointFlags, interfaceIndex: Int32 = 0) {
        self.id = id
        self.address = address
        self.flags = flags
        self.interfaceIndex = interfaceIndex
    }

    public var description: String { "endpoint id \(id) \(address) flags \(flags) ifindex \(interfaceIndex)" }

    init(_ raw: mpx_pm_endpoint) {
        id = raw.id
        address = IPAddress(family: raw.family, raw: raw.addr)
        flags = EndpointFlags(rawValue: raw.flags)
        interfaceIndex = raw.ifindex
    }

    var raw: mpx_pm_endpoint {
        var out = mpx_pm_endpoint()
        out.id = id
        out.family = address.familyByte
        out.addr = address.raw16
        out.flags = flags.rawValue
        out.ifindex = interfaceIndex
        return out
    }
}
