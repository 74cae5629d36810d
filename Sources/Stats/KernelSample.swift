import DataPlane
import MPTCPKernel

/// Everything read from the kernel at one instant: the raw material of one screen.
public struct KernelSample: Sendable {
    /// Monotonic time of the sample, in microseconds.
    public var time: UInt64
    /// MPTCP sockets that are connections (listeners are counted, not listed).
    public var connections: [DiagSocket]
    /// TCP sockets whose ULP is MPTCP.
    public var subflows: [DiagSocket]
    public var listeners: Int
    public var interfaces: [InterfaceInfo]
    /// nil when the path manager could not be asked (no mptcp_pm family, or no permission).
    public var endpoints: [MPTCPEndpoint]?
    public var limits: PathManagerLimits?
    /// Output interface by subflow cookie, from a route lookup, for subflows that are neither
    /// bound to a device nor from an address of a non-loopback interface (a server on lo).
    public var routedInterfaces: [UInt64: Int32]

    public init(time: UInt64, connections: [DiagSocket], subflows: [DiagSocket], listeners: Int = 0,
                interfaces: [InterfaceInfo] = [], endpoints: [MPTCPEndpoint]? = nil, limits: PathManagerLimits? = nil,
                routedInterfaces: [UInt64: Int32] = [:]) {
        self.time = time
        self.connections = connections
        self.subflows = subflows
        self.listeners = listeners
        self.interfaces = interfaces
        self.endpoints = endpoints
        self.limits = limits
        self.routedInterfaces = routedInterfaces
    }

    /// The interface a subflow uses: its bound device, else the non-loopback interface that
    /// owns its local address, else the route lookup's answer.
    public func interface(of subflow: DiagSocket) -> InterfaceInfo? {
        interfaces.withIndex(subflow.boundInterfaceIndex)
            ?? interfaces.owning(subflow.local.address, excludingLoopback: true)
            ?? routedInterfaces[subflow.cookie].flatMap { interfaces.withIndex($0) }
    }
}

public struct PathManagerLimits: Hashable, Sendable, Codable {
    public var subflows: UInt32
    public var addAddrAccepted: UInt32

    public init(subflows: UInt32, addAddrAccepted: UInt32) {
        self.subflows = subflows
        self.addAddrAccepted = addAddrAccepted
    }
}

/// A network interface with its addresses, for naming a subflow's interface.
public struct InterfaceInfo: Hashable, Sendable {
    public var index: Int32
    public var name: String
    public var addresses: [IPAddress]
    public var isLoopback: Bool

    public init(index: Int32, name: String, addresses: [IPAddress], isLoopback: Bool = false) {
        self.index = index
        self.name = name
        self.addresses = addresses
        self.isLoopback = isLoopback
    }
}

extension Array where Element == InterfaceInfo {
    /// The interface with this index; nil for 0 (no interface) or one not listed.
    public func withIndex(_ index: Int32) -> InterfaceInfo? {
        index > 0 ? first { $0.index == index } : nil
    }

    /// The interface that has `address`.
    public func owning(_ address: IPAddress, excludingLoopback: Bool = false) -> InterfaceInfo? {
        first { !(excludingLoopback && $0.isLoopback) && $0.addresses.contains(address) }
    }
}
