import DataPlane
import CMPTCPNetlink
import Glibc

/// A link as rtnetlink reports it.
public struct LinkState: Hashable, Sendable {
    public var index: Int32
    public var name: String
    public var flags: UInt32
    public var operState: UInt8
    public var deleted: Bool

    public init(index: Int32, name: String, flags: UInt32, operState: UInt8, deleted: Bool = false) {
        self.index = index
        self.name = name
        self.flags = flags
        self.operState = operState
        self.deleted = deleted
    }

    /// Usable for traffic: administratively up, carrier, and operationally up
    /// (IFF_UP, IFF_RUNNING, IFF_LOWER_UP and IF_OPER_UP; reference §5).
    public var isUsable: Bool {
        let up: UInt32 = 0x1, running: UInt32 = 0x40, lowerUp: UInt32 = 0x10000
        return !deleted && flags & up != 0 && flags & running != 0 && flags & lowerUp != 0 && operState == 6
    }
}

/// An address on an interface, as rtnetlink reports it.
public struct InterfaceAddress: Hashable, Sendable {
    public var interfaceIndex: Int32
    public var address: IPAddress
    public var prefixLength: UInt8
    public var deleted: Bool

    public init(interfaceIndex: Int32, address: IPAddress, prefixLength: UInt8, deleted: Bool = false) {
        self.interfaceIndex = interfaceIndex
        self.address = address
        self.prefixLength = prefixLength
        self.deleted = deleted
    }
}

/// A route as rtnetlink reports it (dumps and RTM_NEWROUTE/RTM_DELROUTE changes): enough to
/// learn an uplink's gateway from the default route its DHCP client or operator installed.
public struct RouteEntry: Hashable, Sendable {
    public static let mainTable: UInt32 = 254
    public var family: UInt8
    public var destinationPrefixLength: UInt8
    public var table: UInt32
    /// RTN_* (1 = unicast).
    public var type: UInt8
    public var gateway: IPAddress?
    /// RTA_OIF; 0 when the route has none (a multipath route).
    public var interfaceIndex: Int32
    /// The metric.
    public var priority: UInt32
    public var deleted: Bool

    public init(family: UInt8, destinationPrefixLength: UInt8, table: UInt32, type: UInt8 = 1, gateway: IPAddress?,
                interfaceIndex: Int32, priority: UInt32 = 0, deleted: Bool = false) {
        self.family = family
        self.destinationPrefixLength = destinationPrefixLength
        self.table = table
        self.type = type
        self.gateway = gateway
        self.interfaceIndex = interfaceIndex
        self.priority = priority
        self.deleted = deleted
    }

    /// A unicast default route of the main table through a next hop on one interface.
    public var isMainDefaultViaGateway: Bool {
        table == Self.mainTable && destinationPrefixLength == 0 && type == 1 && gateway != nil && interfaceIndex > 0
    }
}

/// An MPTCP path-manager event (group mptcp_pm_events).
public struct MPTCPEvent: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable {
        case created = 1, established = 2, closed = 3, announced = 6, removed = 7
        case subflowEstablished = 10, subflowClosed = 11, subflowPriority = 13
        case listenerCreated = 15, listenerClosed = 16
    }

    public var kind: Kind?
    public var rawType: UInt8
    public var token: UInt32?
    public var localAddress: IPAddress?
    public var remoteAddress: IPAddress?
    public var localPort: UInt16
    public var remotePort: UInt16
    public var localID: UInt8
    public var remoteID: UInt8
    public var backup: Bool?
    public var error: UInt8?
    public var interfaceIndex: Int32?

    public var description: String {
        var parts = ["\(kind.map { "\($0)" } ?? "event \(rawType)")"]
        if let token { parts.append("token \(token)") }
        if let localAddress { parts.append("\(localAddress):\(localPort)") }
        if let remoteAddress { parts.append("-> \(remoteAddress):\(remotePort)") }
        parts.append("ids \(localID)/\(remoteID)")
        if let backup { parts.append("backup \(backup)") }
        if let error { parts.append("error \(error)") }
        return parts.joined(separator: " ")
    }

    public init(kind: Kind, token: UInt32? = nil, local: SocketAddress? = nil, remote: SocketAddress? = nil, localID: UInt8 = 0,
                remoteID: UInt8 = 0, backup: Bool? = nil, error: UInt8? = nil, interfaceIndex: Int32? = nil) {
        self.kind = kind
        rawType = kind.rawValue
        self.token = token
        localAddress = local?.address
        remoteAddress = remote?.address
        localPort = local?.port ?? 0
        remotePort = remote?.port ?? 0
        self.localID = localID
        self.remoteID = remoteID
        self.backup = backup
        self.error = error
        self.interfaceIndex = interfaceIndex
    }

    init(_ raw: mpx_pm_event) {
        rawType = raw.type
        kind = Kind(rawValue: raw.type)
        token = raw.present & MPX_EV_HAS_TOKEN != 0 ? raw.token : nil
        localAddress = raw.present & MPX_EV_HAS_SADDR != 0 ? IPAddress(family: raw.family, raw: raw.saddr) : nil
        remoteAddress = raw.present & MPX_EV_HAS_DADDR != 0 ? IPAddress(family: raw.family, raw: raw.daddr) : nil
        localPort = raw.sport
        remotePort = raw.dport
        localID = raw.loc_id
        remoteID = raw.rem_id
        backup = raw.present & MPX_EV_HAS_BACKUP != 0 ? raw.backup != 0 : nil
        error = raw.present & MPX_EV_HAS_ERROR != 0 ? raw.error : nil
        interfaceIndex = raw.present & MPX_EV_HAS_IFINDEX != 0 ? raw.ifindex : nil
    }
}

/// One parsed netlink message.
public enum NetlinkRecord: Sendable {
    case link(LinkState)
    case address(InterfaceAddress)
    case route(RouteEntry)
    case mptcpEvent(MPTCPEvent)
    case endpoint(MPTCPEndpoint)
    case limits(subflows: UInt32, addAddrAccepted: UInt32)
    case diagSocket(DiagSocket)
    case done(sequence: UInt32)
    case ack(sequence: UInt32)
    case error(sequence: UInt32, NetlinkError)
    case malformed(String)
    case other

    /// Parses every message in a received datagram. `pmFamily` is the resolved mptcp_pm id
    /// (0 when the bytes come from rtnetlink).
    public static func parse(_ bytes: [UInt8], pmFamily: UInt16 = 0) -> [NetlinkRecord] {
        var records: [NetlinkRecord] = []
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            var raw = mpx_nl_record()
            while mpx_nl_next(buffer.baseAddress, buffer.count, &offset, pmFamily, &raw) == 1 {
                records.append(NetlinkRecord(raw))
            }
        }
        return records
    }

    init(_ raw: mpx_nl_record) {
        switch raw.kind {
        case Int32(MPX_REC_LINK.rawValue):
            var name = raw.link.name
            let text = withUnsafeBytes(of: &name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            self = .link(LinkState(index: raw.link.ifindex, name: text, flags: raw.link.flags, operState: raw.link.operstate, deleted: raw.link.deleted != 0))
        case Int32(MPX_REC_ADDR.rawValue):
            self = .address(InterfaceAddress(interfaceIndex: raw.addr.ifindex, address: IPAddress(family: raw.addr.family, raw: raw.addr.addr), prefixLength: raw.addr.prefixlen, deleted: raw.addr.deleted != 0))
        case Int32(MPX_REC_ROUTE.rawValue):
            let r = raw.route
            self = .route(RouteEntry(family: r.family, destinationPrefixLength: r.dst_len, table: r.table, type: r.type,
                                     gateway: r.has_gateway != 0 ? IPAddress(family: r.family, raw: r.gateway) : nil,
                                     interfaceIndex: r.oif, priority: r.priority, deleted: r.deleted != 0))
        case Int32(MPX_REC_PM_EVENT.rawValue):
            self = .mptcpEvent(MPTCPEvent(raw.event))
        case Int32(MPX_REC_PM_ENDPOINT.rawValue):
            self = .endpoint(MPTCPEndpoint(raw.endpoint))
        case Int32(MPX_REC_PM_LIMITS.rawValue):
            self = .limits(subflows: raw.limit_subflows, addAddrAccepted: raw.limit_add_addr_accepted)
        case Int32(MPX_REC_DIAG_SOCKET.rawValue):
            self = .diagSocket(DiagSocket(raw.diag))
        case Int32(MPX_REC_DONE.rawValue):
            self = .done(sequence: raw.seq)
        case Int32(MPX_REC_ACK.rawValue):
            self = .ack(sequence: raw.seq)
        case Int32(MPX_REC_ERROR.rawValue):
            self = .error(sequence: raw.seq, NetlinkError("netlink", raw.error))
        case Int32(MPX_REC_MALFORMED.rawValue):
            self = .malformed(NetlinkError("parse", raw.error).kernelMessage)
        default:
            self = .other
        }
    }
}
