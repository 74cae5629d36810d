import DataPlane
import Glibc
import MPTCPKernel

/// Reads one `KernelSample` at a time from the kernel of the calling thread's namespace:
/// sock_diag for connections and subflows, rtnetlink for interface names, the path manager
/// for endpoints and limits, and (when permitted) its event group. What cannot be read is
/// said in `notes` rather than failing the whole monitor.
public final class KernelSampler {
    private let diag: SockDiagClient
    private let routes: RouteClient
    private let pathManager: PathManagerClient?
    private let eventSocket: PathManagerEventSocket?
    public private(set) var notes: [String] = []

    public init() throws(NetlinkError) {
        diag = try SockDiagClient()
        routes = try RouteClient()
        do {
            pathManager = try PathManagerClient()
        } catch {
            pathManager = nil
            notes.append("no path-manager view: \(error)")
        }
        do {
            eventSocket = try PathManagerEventSocket()
        } catch {
            eventSocket = nil
            notes.append(error.errno == EPERM || error.errno == EACCES
                         ? "no path-manager events: subscribing needs CAP_NET_ADMIN (run as root)"
                         : "no path-manager events: \(error)")
        }
    }

    /// The event socket's descriptor, to wait on; nil when events are not available.
    public var eventFD: Int32? { eventSocket?.fd }

    public func sample() throws(NetlinkError) -> KernelSample {
        let mptcp = try diag.sockets(.mptcp)
        let tcp = try diag.sockets(.tcp)
        let connections = mptcp.filter { $0.state != .listen }
        let subflows = tcp.filter { $0.subflow != nil }
        if geteuid() != 0, !connections.isEmpty, subflows.isEmpty, !notes.contains(Self.subflowNote) {
            notes.append(Self.subflowNote)
        }
        let links = try routes.links()
        let addresses = try routes.addresses()
        let interfaces = links.map { link in
            InterfaceInfo(index: link.index, name: link.name,
                          addresses: addresses.filter { $0.interfaceIndex == link.index }.map(\.address),
                          isLoopback: link.flags & 0x8 /* IFF_LOOPBACK */ != 0)
        }
        var sample = KernelSample(time: monotonicMicroseconds(), connections: connections, subflows: subflows,
                                  listeners: mptcp.count - connections.count, interfaces: interfaces)
        sample.routedInterfaces = routeLookups(for: sample)
        var endpoints: [MPTCPEndpoint]?
        var limits: PathManagerLimits?
        if let pathManager {
            endpoints = try? pathManager.endpoints()
            if let found = try? pathManager.limits() {
                limits = PathManagerLimits(subflows: found.subflows, addAddrAccepted: found.addAddrAccepted)
            }
        }
        sample.endpoints = endpoints
        sample.limits = limits
        return sample
    }

    /// Route lookups for the subflows that need one, remembered for a few seconds (routes
    /// rarely change, and a busy server has many subflows to the same peers).
    private var routeCache: [String: Int32] = [:]
    private var routeCacheTime: UInt64 = 0

    private func routeLookups(for sample: KernelSample) -> [UInt64: Int32] {
        if sample.time &- routeCacheTime > 5_000_000 {
            routeCache = [:]
            routeCacheTime = sample.time
        }
        var found: [UInt64: Int32] = [:]
        for subflow in sample.subflows where sample.interface(of: subflow) == nil {
            let key = "\(subflow.local.address) \(subflow.remote.address)"
            if routeCache[key] == nil {
                routeCache[key] = (try? routes.outputInterface(to: subflow.remote.address, from: subflow.local.address)).flatMap { $0 } ?? 0
            }
            if let index = routeCache[key], index > 0 { found[subflow.cookie] = index }
        }
        return found
    }

    /// Path-manager events queued now, as lines for the header (empty without permission).
    public func pendingEvents(interfaces: [InterfaceInfo]) -> [EventLine] {
        guard let eventSocket, let events = try? eventSocket.pending() else { return [] }
        let now = wallClockSeconds()
        return events.compactMap { event in event.summary(interfaces: interfaces).map { EventLine(time: now, text: $0) } }
    }

    static let subflowNote = "subflow details need CAP_NET_ADMIN: the kernel shows the MPTCP ULP of a TCP socket only to it"
}

func wallClockSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

extension MPTCPEvent {
    /// One line for the monitor's event list; nil for events it does not show (listeners).
    func summary(interfaces: [InterfaceInfo]) -> String? {
        let path: String = {
            guard let localAddress, let remoteAddress else { return "" }
            let name = (interfaceIndex.flatMap { interfaces.withIndex($0) } ?? interfaces.owning(localAddress))?.name
            return " \(localAddress):\(localPort) → \(remoteAddress):\(remotePort)\(name.map { " (\($0))" } ?? "")"
        }()
        let connection = token.map { " token \($0)" } ?? ""
        switch kind {
        case .created: return "connection created\(connection)"
        case .established: return "connection established\(connection)"
        case .closed: return "connection closed\(connection)"
        case .announced: return "address announced id \(remoteID)\(remoteAddress.map { " \($0)" } ?? "")\(connection)"
        case .removed: return "address removed id \(remoteID)\(connection)"
        case .subflowEstablished: return "subflow up\(path)\(backup == true ? " backup" : "")"
        case .subflowClosed: return "subflow down\(path)\(error.map { $0 != 0 ? " error \($0)" : "" } ?? "")"
        case .subflowPriority: return "priority\(path) → \(backup == true ? "backup" : "active")"
        case .listenerCreated, .listenerClosed: return nil
        case nil: return "event \(rawType)\(connection)"
        }
    }
}
