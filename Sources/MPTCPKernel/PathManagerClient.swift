import DataPlane
import CMPTCPNetlink
import Glibc

/// A netlink socket (generic or route), closed on deinit. Internal: C types stay in here.
final class NetlinkSocket {
    let handle: OpaquePointer

    init(bus: Int32, groups: UInt32 = 0, operation: String) throws(NetlinkError) {
        var error = mpx_nl_error()
        guard let handle = mpx_nl_open(bus, groups, &error) else { throw NetlinkError(operation, error) }
        self.handle = handle
    }

    deinit { mpx_nl_close(handle) }

    var fd: Int32 { mpx_nl_fd(handle) }

    /// Runs one C request; its error (with the kernel's text) becomes a NetlinkError.
    func run(_ operation: @autoclosure () -> String, _ body: (OpaquePointer, UnsafeMutablePointer<mpx_nl_error>) -> Int32) throws(NetlinkError) {
        var error = mpx_nl_error()
        if body(handle, &error) < 0 { throw NetlinkError(operation(), error) }
    }

    /// Reads datagrams until the dump with `sequence` is done, returning its records.
    func collectDump(sequence: UInt32, pmFamily: UInt16, operation: String) throws(NetlinkError) -> [NetlinkRecord] {
        try collectDump(sequence: sequence, operation: operation) { NetlinkRecord.parse($0, pmFamily: pmFamily) }
    }

    /// Reads datagrams until the dump with `sequence` is done, parsing each with `parse`.
    func collectDump(sequence: UInt32, operation: String, parse: ([UInt8]) -> [NetlinkRecord]) throws(NetlinkError) -> [NetlinkRecord] {
        var records: [NetlinkRecord] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var error = mpx_nl_error()
            let count = buffer.withUnsafeMutableBytes { mpx_nl_receive(handle, $0.baseAddress, $0.count, 0, &error) }
            if count < 0 { throw NetlinkError(operation, error) }
            for record in parse(Array(buffer[0..<Int(count)])) {
                switch record {
                case .done(let seq) where seq == sequence: return records
                case .error(let seq, let failure) where seq == sequence:
                    throw NetlinkError(operation: operation, errno: failure.errno, kernelMessage: failure.kernelMessage)
                case .ack, .done, .error, .other, .mptcpEvent: continue
                default: records.append(record)
                }
            }
        }
    }

    /// Reads whatever is queued without blocking.
    func drain(pmFamily: UInt16) throws(NetlinkError) -> [NetlinkRecord] {
        var records: [NetlinkRecord] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var error = mpx_nl_error()
            let count = buffer.withUnsafeMutableBytes { mpx_nl_receive(handle, $0.baseAddress, $0.count, 1, &error) }
            if count < 0 {
                // ENOBUFS: the kernel dropped messages; the caller must resynchronise.
                throw NetlinkError("receive", error)
            }
            if count == 0 { return records }
            records += NetlinkRecord.parse(Array(buffer[0..<Int(count)]), pmFamily: pmFamily)
        }
    }
}

/// Commands to the kernel's in-kernel MPTCP path manager (generic netlink family mptcp_pm),
/// for the network namespace the calling thread is in.
public final class PathManagerClient {
    let socket: NetlinkSocket
    private var family = mpx_pm_family()

    public init() throws(NetlinkError) {
        socket = try NetlinkSocket(bus: 16 /* NETLINK_GENERIC */, operation: "open generic netlink")
        try socket.run("resolve mptcp_pm") { mpx_pm_resolve($0, &family, $1) }
    }

    public var familyID: UInt16 { family.id }
    public var eventsGroup: UInt32 { family.events_group }

    public func add(_ endpoint: MPTCPEndpoint) throws(NetlinkError) {
        var raw = endpoint.raw
        try socket.run("ADD_ADDR \(endpoint.address) flags \(endpoint.flags)") { mpx_pm_add_addr($0, &family, &raw, $1) }
    }

    /// Deletes by id (and address, which id 0 needs).
    public func delete(_ endpoint: MPTCPEndpoint) throws(NetlinkError) {
        var raw = endpoint.raw
        try socket.run("DEL_ADDR id \(endpoint.id) \(endpoint.address)") { mpx_pm_del_addr($0, &family, &raw, $1) }
    }

    /// Sets the endpoint's flags (the kernel changes only backup and fullmesh; absolute).
    public func setFlags(_ endpoint: MPTCPEndpoint) throws(NetlinkError) {
        var raw = endpoint.raw
        try socket.run("SET_FLAGS \(endpoint.address) \(endpoint.flags)") { mpx_pm_set_flags($0, &family, &raw, $1) }
    }

    public func flush() throws(NetlinkError) {
        try socket.run("FLUSH_ADDRS") { mpx_pm_flush($0, &family, $1) }
    }

    public func setLimits(subflows: UInt32, addAddrAccepted: UInt32) throws(NetlinkError) {
        try socket.run("SET_LIMITS subflows \(subflows) add_addr_accepted \(addAddrAccepted)") { mpx_pm_set_limits($0, &family, subflows, addAddrAccepted, $1) }
    }

    public func limits() throws(NetlinkError) -> (subflows: UInt32, addAddrAccepted: UInt32) {
        var subflows: UInt32 = 0
        var accepted: UInt32 = 0
        try socket.run("GET_LIMITS") { mpx_pm_get_limits($0, &family, &subflows, &accepted, $1) }
        return (subflows, accepted)
    }

    public func endpoints() throws(NetlinkError) -> [MPTCPEndpoint] {
        var sequence: Int32 = 0
        try socket.run("GET_ADDR dump") { handle, error in
            sequence = mpx_pm_request_dump(handle, &family, error)
            return sequence
        }
        return try socket.collectDump(sequence: UInt32(sequence), pmFamily: family.id, operation: "GET_ADDR dump").compactMap {
            if case .endpoint(let endpoint) = $0 { return endpoint }
            return nil
        }
    }
}

/// Path-manager events of this namespace (needs CAP_NET_ADMIN to subscribe).
public final class PathManagerEventSocket {
    let socket: NetlinkSocket
    public let familyID: UInt16

    public init() throws(NetlinkError) {
        socket = try NetlinkSocket(bus: 16 /* NETLINK_GENERIC */, operation: "open generic netlink")
        var family = mpx_pm_family()
        try socket.run("resolve mptcp_pm") { mpx_pm_resolve($0, &family, $1) }
        familyID = family.id
        try socket.run("subscribe to mptcp_pm_events") { mpx_nl_join_group($0, family.events_group, $1) }
    }

    public var fd: Int32 { socket.fd }

    /// The events queued now (non-blocking).
    public func pending() throws(NetlinkError) -> [MPTCPEvent] {
        try socket.drain(pmFamily: familyID).compactMap {
            if case .mptcpEvent(let event) = $0 { return event }
            return nil
        }
    }
}

/// rtnetlink: dumps of links and addresses, per-source routes and rules, for the calling
/// thread's namespace. With `monitor`, also receives link and address changes.
public final class RouteClient {
    let socket: NetlinkSocket

    /// - Parameter monitor: join RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR,
    ///   RTMGRP_IPV4_ROUTE and RTMGRP_IPV6_ROUTE.
    /// - Parameter receiveBufferBytes: SO_RCVBUF for the socket (nil: the kernel's default).
    public init(monitor: Bool = false, receiveBufferBytes: Int32? = nil) throws(NetlinkError) {
        let groups: UInt32 = monitor ? 0x1 | 0x10 | 0x100 | 0x40 | 0x400 : 0
        socket = try NetlinkSocket(bus: 0 /* NETLINK_ROUTE */, groups: groups, operation: "open rtnetlink")
        if var bytes = receiveBufferBytes,
           setsockopt(socket.fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            throw NetlinkError(operation: "setsockopt(SO_RCVBUF) on rtnetlink", errno: errno, kernelMessage: String(cString: strerror(errno)))
        }
    }

    public var fd: Int32 { socket.fd }

    public func links() throws(NetlinkError) -> [LinkState] {
        try dump(type: 18 /* RTM_GETLINK */, "RTM_GETLINK dump").compactMap { if case .link(let l) = $0 { return l }; return nil }
    }

    public func addresses() throws(NetlinkError) -> [InterfaceAddress] {
        try dump(type: 22 /* RTM_GETADDR */, "RTM_GETADDR dump").compactMap { if case .address(let a) = $0 { return a }; return nil }
    }

    /// Every route of every table.
    public func routes() throws(NetlinkError) -> [RouteEntry] {
        try dump(type: 26 /* RTM_GETROUTE */, "RTM_GETROUTE dump").compactMap { if case .route(let r) = $0 { return r }; return nil }
    }

    private func dump(type: UInt16, _ operation: String) throws(NetlinkError) -> [NetlinkRecord] {
        var sequence: Int32 = 0
        try socket.run(operation) { handle, error in
            sequence = mpx_rt_request_dump(handle, type, error)
            return sequence
        }
        return try socket.collectDump(sequence: UInt32(sequence), pmFamily: 0, operation: operation)
    }

    /// Reads and drops everything queued (after an overrun, before the re-dump). Until the
    /// queue is empty the kernel, having reported one overrun, drops further messages without
    /// reporting another; once it is empty, any message lost later is reported again.
    public func discardPending() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(socket.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 || (count < 0 && (errno == EINTR || errno == ENOBUFS)) { continue }
            return
        }
    }

    /// Link, address and route changes queued now (non-blocking; monitor sockets only).
    public func pending() throws(NetlinkError) -> [NetlinkRecord] {
        try socket.drain(pmFamily: 0)
    }

    /// `ip route add|del [dst/len] [via gw] dev oif [src prefsrc] table T`.
    public func route(add: Bool, table: UInt32, destination: IPAddress?, prefixLength: UInt8, gateway: IPAddress?,
                      interfaceIndex: Int32, source: IPAddress?) throws(NetlinkError) {
        let family = (destination ?? gateway ?? source)?.familyByte ?? UInt8(AF_INET)
        let dst = destination.map { Array($0.bytes) } ?? [UInt8](repeating: 0, count: 16)
        let operation = "\(add ? "add" : "delete") route \(destination.map { "\($0)/\(prefixLength)" } ?? "default")\(gateway.map { " via \($0)" } ?? "") ifindex \(interfaceIndex) table \(table)"
        try socket.run(operation) { handle, error in
            dst.withUnsafeBufferPointer { d in
                withOptionalBytes(gateway.map { Array($0.bytes) }) { g in
                    withOptionalBytes(source.map { Array($0.bytes) }) { s in
                        mpx_rt_route(handle, add ? 1 : 0, table, family, d.baseAddress, destination == nil ? 0 : prefixLength, g, interfaceIndex, s, error)
                    }
                }
            }
        }
    }

    /// `ip route get destination from source`: the interface index the kernel would use, or nil.
    public func outputInterface(to destination: IPAddress, from source: IPAddress?) throws(NetlinkError) -> Int32? {
        var oif: Int32 = 0
        let dst = Array(destination.bytes)
        let src = source?.familyByte == destination.familyByte ? source.map { Array($0.bytes) } : nil
        try socket.run("route get \(destination)") { handle, error in
            dst.withUnsafeBufferPointer { d in
                withOptionalBytes(src) { s in mpx_rt_get_route(handle, destination.familyByte, d.baseAddress, s, &oif, error) }
            }
        }
        return oif > 0 ? oif : nil
    }

    /// `ip rule add|del from source lookup table priority P`.
    public func rule(add: Bool, table: UInt32, priority: UInt32, source: IPAddress) throws(NetlinkError) {
        let bytes = Array(source.bytes)
        let length = UInt8(bytes.count * 8)
        try socket.run("\(add ? "add" : "delete") rule from \(source) lookup \(table) priority \(priority)") { handle, error in
            bytes.withUnsafeBufferPointer { mpx_rt_rule(handle, add ? 1 : 0, table, priority, source.familyByte, $0.baseAddress, length, error) }
        }
    }
}

private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafePointer<UInt8>?) -> R) -> R {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
}
