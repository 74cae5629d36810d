import DataPlane
import MPTCPKernel

/// What the path manager does to the host: every change it makes is one of these.
public enum PathCommand: Hashable, Sendable, CustomStringConvertible {
    case addEndpoint(MPTCPEndpoint)
    case deleteEndpoint(MPTCPEndpoint)
    /// Absolute flags for an existing endpoint (the kernel changes backup/fullmesh only).
    case setFlags(MPTCPEndpoint)
    case addRoute(table: UInt32, gateway: IPAddress?, interfaceIndex: Int32, source: IPAddress)
    case deleteRoute(table: UInt32, gateway: IPAddress?, interfaceIndex: Int32, source: IPAddress)
    case addRule(table: UInt32, priority: UInt32, source: IPAddress)
    case deleteRule(table: UInt32, priority: UInt32, source: IPAddress)
    case setLimits(subflows: UInt32, addAddrAccepted: UInt32)

    /// The command's name, for a metric label.
    public var kind: String {
        switch self {
        case .addEndpoint: return "add_endpoint"
        case .deleteEndpoint: return "delete_endpoint"
        case .setFlags: return "set_flags"
        case .addRoute: return "add_route"
        case .deleteRoute: return "delete_route"
        case .addRule: return "add_rule"
        case .deleteRule: return "delete_rule"
        case .setLimits: return "set_limits"
        }
    }

    public var description: String {
        switch self {
        case .addEndpoint(let e): return "add endpoint id \(e.id) \(e.address) \(e.flags) ifindex \(e.interfaceIndex)"
        case .deleteEndpoint(let e): return "delete endpoint id \(e.id) \(e.address)"
        case .setFlags(let e): return "set endpoint id \(e.id) \(e.address) flags \(e.flags)"
        case .addRoute(let t, let g, let i, let s): return "add route default\(g.map { " via \($0)" } ?? "") ifindex \(i) src \(s) table \(t)"
        case .deleteRoute(let t, let g, let i, let s): return "delete route default\(g.map { " via \($0)" } ?? "") ifindex \(i) src \(s) table \(t)"
        case .addRule(let t, let p, let s): return "add rule from \(s) lookup \(t) priority \(p)"
        case .deleteRule(let t, let p, let s): return "delete rule from \(s) lookup \(t) priority \(p)"
        case .setLimits(let s, let a): return "set limits subflows \(s) add_addr_accepted \(a)"
        }
    }
}

/// A batch of commands with the reason it was decided, for the log.
public struct PathDecision: Equatable, Sendable {
    public var reason: String
    public var commands: [PathCommand]
}

/// Per-interface settings from configuration.
public struct InterfacePolicy: Hashable, Sendable {
    public var flags: EndpointFlags?
    /// Next hop for this interface's routing table; nil routes on-link (`default dev IF`).
    public var gateway: IPAddress?

    public init(flags: EndpointFlags? = nil, gateway: IPAddress? = nil) {
        self.flags = flags
        self.gateway = gateway
    }
}

public struct PathPolicyConfiguration: Sendable {
    /// Endpoint flags by class. Default: Ethernet and Wi-Fi `subflow`, cellular `subflow,backup`.
    public var classFlags: [InterfaceClass: EndpointFlags] = [
        .ethernet: [.subflow], .wifi: [.subflow], .cellular: [.subflow, .backup],
    ]
    public var interfaces: [String: InterfacePolicy] = [:]
    /// Delete and replace endpoints this manager did not create (off: never fight another manager).
    public var ownAllEndpoints = false
    /// Routing table of interface index i is tableBase + i; rules get priority ruleBase + i.
    public var tableBase: UInt32 = 1000
    public var rulePriorityBase: UInt32 = 1000
    public var manageRouting = true

    public init() {}
}

/// The path manager's decisions, as a pure state machine: link, address and start-up facts in,
/// PathCommands out. It computes the endpoints, flags, routes, rules and limits the host
/// should have and emits the difference to what it has installed, ordered for a hitless
/// handover: promotions (SET_FLAGS) first, then deletions, then additions.
public struct PathPolicy {
    public let configuration: PathPolicyConfiguration
    private var links: [Int32: LinkState] = [:]
    private var classes: [Int32: InterfaceClass] = [:]
    private var addresses: [Int32: Set<IPAddress>] = [:]
    /// Endpoints this manager installed, by address.
    public private(set) var installed: [IPAddress: MPTCPEndpoint] = [:]
    /// Endpoints other managers own (never touched unless ownAllEndpoints). Their paths are not
    /// this manager's: no failover, no routing table, no health watch.
    public private(set) var foreign: [IPAddress: MPTCPEndpoint] = [:]
    private var ids: [IPAddress: UInt8] = [:]
    private var installedRoutes: Set<PathCommand> = []
    /// The main table's default routes through a next hop (a DHCP client's or the operator's),
    /// normalized (deleted: false): the gateways of uplinks not given one by configuration.
    private var mainDefaultRoutes: Set<RouteEntry> = []
    /// Paths the health monitor took out of use, by address: they get no endpoint (so no
    /// subflow) while they are out, but keep their routing, so they can be tried again.
    private var failedPaths: Set<IPAddress> = []
    private var installedRules: Set<PathCommand> = []
    private var limits: (UInt32, UInt32)?

    public init(configuration: PathPolicyConfiguration) {
        self.configuration = configuration
    }

    // MARK: events in

    /// The host as found at start-up. `existing` are the kernel's endpoints now.
    public mutating func start(links: [LinkState], addresses: [InterfaceAddress], routes: [RouteEntry] = [], existing: [MPTCPEndpoint],
                               classify: (String) -> InterfaceClass) -> PathDecision {
        mainDefaultRoutes = Self.mainDefaults(routes)
        for link in links {
            self.links[link.index] = link
            classes[link.index] = classify(link.name)
        }
        for address in addresses where !address.deleted { self.addresses[address.interfaceIndex, default: []].insert(address.address) }
        var commands: [PathCommand] = []
        for endpoint in existing {
            if configuration.ownAllEndpoints {
                commands.append(.deleteEndpoint(endpoint))
            } else {
                foreign[endpoint.address] = endpoint
            }
        }
        let decision = reconcile("start-up")
        return PathDecision(reason: decision.reason, commands: commands + decision.commands)
    }

    public mutating func linkChanged(_ link: LinkState, classify: (String) -> InterfaceClass) -> PathDecision {
        let before = links[link.index]?.isUsable ?? false
        if link.deleted {
            links.removeValue(forKey: link.index)
            addresses.removeValue(forKey: link.index)
        } else {
            if classes[link.index] == nil || links[link.index]?.name != link.name { classes[link.index] = classify(link.name) }
            links[link.index] = link
        }
        let after = links[link.index]?.isUsable ?? false
        if !after {
            // The kernel deleted this interface's routes with the link: forget them so they
            // are restored when it comes back.
            installedRoutes = installedRoutes.filter { if case .addRoute(_, _, let i, _) = $0 { return i != link.index }; return true }
            // Its main-table routes went too, without an RTM_DELROUTE (IPv4 sends none).
            mainDefaultRoutes = mainDefaultRoutes.filter { $0.interfaceIndex != link.index }
        }
        let change = before == after ? "changed" : (after ? "up" : "down")
        return reconcile("link \(link.name) \(change)")
    }

    public mutating func addressChanged(_ address: InterfaceAddress) -> PathDecision {
        let name = links[address.interfaceIndex]?.name ?? "ifindex \(address.interfaceIndex)"
        if address.deleted {
            addresses[address.interfaceIndex]?.remove(address.address)
            return reconcile("address \(address.address) removed from \(name)")
        }
        addresses[address.interfaceIndex, default: []].insert(address.address)
        return reconcile("address \(address.address) added on \(name)")
    }

    /// A route added or deleted anywhere. Only the main table's default routes through a next
    /// hop matter: they give the gateway of an uplink that configuration gave none (a DHCP
    /// client installs one per lease). Everything else, our own per-interface tables included,
    /// is ignored without a decision.
    public mutating func routeChanged(_ route: RouteEntry) -> PathDecision {
        guard route.isMainDefaultViaGateway else { return PathDecision(reason: "", commands: []) }
        var normalized = route
        normalized.deleted = false
        let before = learnedGateway(route.interfaceIndex, family: route.family)
        if route.deleted { mainDefaultRoutes.remove(normalized) } else { mainDefaultRoutes.insert(normalized) }
        let after = learnedGateway(route.interfaceIndex, family: route.family)
        guard before != after else { return PathDecision(reason: "", commands: []) }
        let name = links[route.interfaceIndex]?.name ?? "ifindex \(route.interfaceIndex)"
        let what = after.map { "gateway \($0) of \(name) learned from the main table's default route" }
            ?? "gateway \(before!) of \(name) gone from the main table"
        return reconcile(what)
    }

    /// The health monitor saw `address` deliver nothing (PathHealth): take it out of use now,
    /// as if its link had gone (promoting standbys first when it was the last active path).
    public mutating func pathFailed(_ address: IPAddress, evidence: String) -> PathDecision {
        guard installed[address] != nil else { return PathDecision(reason: "", commands: []) }
        failedPaths.insert(address)
        return reconcile("path \(address) on \(interfaceName(of: address) ?? "?") failed: \(evidence)")
    }

    /// Its hold-down is over: put the path back; the kernel opens its subflows again on every
    /// connection when the endpoint returns.
    public mutating func pathReadmitted(_ address: IPAddress, reason: String) -> PathDecision {
        guard failedPaths.remove(address) != nil else { return PathDecision(reason: "", commands: []) }
        return reconcile("path \(address) on \(interfaceName(of: address) ?? "?") tried again: \(reason)")
    }

    /// The addresses of the usable paths this manager has endpoints for now (what the health
    /// monitor watches).
    public var activePathAddresses: Set<IPAddress> { Set(installed.keys) }

    /// Where connections to the proxy's servers should start from while some paths are to be
    /// avoided (failed, or back but unproven): the first path in use of each family that is
    /// not among them, non-backup first, then by interface. Their first subflow follows the
    /// main routing table, which may point at a black hole. Empty when nothing is avoided:
    /// routing (the operator's, or the DHCP client's) decides.
    public func sources(avoiding avoided: Set<IPAddress>) -> [IPAddress] {
        guard !avoided.isEmpty else { return [] }
        let ordered = installed.values.filter { !avoided.contains($0.address) }.sorted {
            ($0.flags.contains(.backup) ? 1 : 0, $0.interfaceIndex, $0.address.description)
                < ($1.flags.contains(.backup) ? 1 : 0, $1.interfaceIndex, $1.address.description)
        }
        var chosen: [IPAddress] = []
        for endpoint in ordered where !chosen.contains(where: { $0.family == endpoint.address.family }) { chosen.append(endpoint.address) }
        return chosen
    }

    /// Every usable managed path address, failed or not.
    public var pathAddresses: Set<IPAddress> { Set(usablePaths().map(\.address).filter { foreign[$0] == nil }) }

    /// The interface a path address is on, for logs and metric labels.
    public func interfaceName(of address: IPAddress) -> String? {
        addresses.first { $0.value.contains(address) }.flatMap { links[$0.key]?.name }
    }

    /// The host as a fresh dump shows it, after the kernel dropped change messages (a netlink
    /// overrun, ENOBUFS): links and addresses are replaced wholesale, so no change that was lost
    /// leaves stale state behind, and what is installed is reconciled against them. Endpoints,
    /// routes and rules this manager installed stay known, so only the differences are sent.
    public mutating func resync(links: [LinkState], addresses: [InterfaceAddress], routes: [RouteEntry] = [],
                                classify: (String) -> InterfaceClass) -> PathDecision {
        mainDefaultRoutes = Self.mainDefaults(routes)
        var fresh: [Int32: LinkState] = [:]
        for link in links where !link.deleted { fresh[link.index] = link }
        for (index, link) in fresh where classes[index] == nil || self.links[index]?.name != link.name {
            classes[index] = classify(link.name)
        }
        for index in classes.keys where fresh[index] == nil { classes.removeValue(forKey: index) }
        // A link that went down (and maybe up again) while messages were lost took its routes
        // with it, and the dump cannot tell: re-add every route (they are added with
        // NLM_F_REPLACE, so one still there is simply replaced by itself). Rules and endpoints
        // are only ever changed by us, so what we installed is still what the kernel has.
        installedRoutes.removeAll()
        self.links = fresh
        self.addresses = [:]
        for address in addresses where !address.deleted && fresh[address.interfaceIndex] != nil {
            self.addresses[address.interfaceIndex, default: []].insert(address.address)
        }
        return reconcile("netlink overrun: state re-read from the kernel")
    }

    /// Leave the host as found: remove our endpoints, rules and routes.
    public mutating func shutdown() -> PathDecision {
        var commands: [PathCommand] = installed.values.sorted { $0.id < $1.id }.map { .deleteEndpoint($0) }
        for route in installedRoutes.sorted(by: { $0.description < $1.description }) {
            if case .addRoute(let t, let g, let i, let s) = route { commands.append(.deleteRoute(table: t, gateway: g, interfaceIndex: i, source: s)) }
        }
        for rule in installedRules.sorted(by: { $0.description < $1.description }) {
            if case .addRule(let t, let p, let s) = rule { commands.append(.deleteRule(table: t, priority: p, source: s)) }
        }
        installed.removeAll()
        installedRoutes.removeAll()
        installedRules.removeAll()
        return PathDecision(reason: "shutdown", commands: commands)
    }

    // MARK: decisions

    public func interfaceClass(_ index: Int32) -> InterfaceClass? { classes[index] }

    private func isManaged(_ index: Int32) -> Bool {
        guard let name = links[index]?.name else { return false }
        if configuration.interfaces[name] != nil { return true }
        guard let c = classes[index] else { return false }
        return c != .other
    }

    private func baseFlags(_ index: Int32) -> EndpointFlags {
        let name = links[index]?.name ?? ""
        if let flags = configuration.interfaces[name]?.flags { return flags }
        return configuration.classFlags[classes[index] ?? .other] ?? [.subflow]
    }

    /// The main table's default routes through a next hop, as kept: normalized to `deleted: false`.
    private static func mainDefaults(_ routes: [RouteEntry]) -> Set<RouteEntry> {
        Set(routes.filter(\.isMainDefaultViaGateway).map { var route = $0; route.deleted = false; return route })
    }

    /// The next hop the main table has for this interface and family: the lowest metric wins.
    private func learnedGateway(_ index: Int32, family: UInt8) -> IPAddress? {
        mainDefaultRoutes.filter { $0.interfaceIndex == index && $0.family == family }
            .min { ($0.priority, $0.gateway!.description) < ($1.priority, $1.gateway!.description) }?.gateway
    }

    /// A path's next hop: configured (`--gateway IF=ADDR`, of the address's family), else
    /// learned from the main table, else none (the route is on-link).
    private func gateway(for path: (index: Int32, address: IPAddress)) -> IPAddress? {
        let family = UInt8(path.address.family)
        if let configured = configuration.interfaces[links[path.index]?.name ?? ""]?.gateway, UInt8(configured.family) == family {
            return configured
        }
        return learnedGateway(path.index, family: family)
    }

    /// Usable paths: managed, link usable, with a non-link-local address.
    private func usablePaths() -> [(index: Int32, address: IPAddress)] {
        var paths: [(Int32, IPAddress)] = []
        for (index, link) in links where link.isUsable && isManaged(index) {
            for address in addresses[index] ?? [] where !address.isLinkLocal {
                paths.append((index, address))
            }
        }
        return paths.sorted { ($0.0, $0.1.description) < ($1.0, $1.1.description) }
    }

    private mutating func id(for address: IPAddress) -> UInt8 {
        if let existing = ids[address] { return existing }
        let taken = Set(ids.values).union(foreign.values.map(\.id))
        let next = (1...255).first { !taken.contains(UInt8($0)) } ?? 255
        ids[address] = UInt8(next)
        return UInt8(next)
    }

    private mutating func reconcile(_ reason: String) -> PathDecision {
        let paths = usablePaths().filter { foreign[$0.address] == nil }
        // A failed path whose address or link went away is no longer failed: it is gone.
        failedPaths = failedPaths.filter { address in paths.contains { $0.address == address } }
        // Desired endpoints with their class flags: every usable path but the failed ones.
        var desired: [IPAddress: MPTCPEndpoint] = [:]
        for path in paths where !failedPaths.contains(path.address) {
            desired[path.address] = MPTCPEndpoint(id: id(for: path.address), address: path.address, flags: baseFlags(path.index), interfaceIndex: path.index)
        }
        // Promotion: with no non-backup path left, standbys carry the traffic.
        var promoted = false
        if !desired.isEmpty && desired.values.allSatisfy({ $0.flags.contains(.backup) }) {
            for key in desired.keys { desired[key]!.flags.remove(.backup) }
            promoted = true
        }
        var flagChanges: [PathCommand] = []
        var deletions: [PathCommand] = []
        var additions: [PathCommand] = []
        for (address, endpoint) in desired {
            if let current = installed[address] {
                if current.flags != endpoint.flags { flagChanges.append(.setFlags(endpoint)) }
            } else {
                additions.append(.addEndpoint(endpoint))
            }
        }
        for (address, endpoint) in installed where desired[address] == nil {
            deletions.append(.deleteEndpoint(endpoint))
        }
        installed = desired
        // Routing: a table per interface, a rule per address, restored when links return.
        var routing: [PathCommand] = []
        if configuration.manageRouting {
            var desiredRules: Set<PathCommand> = []
            var desiredRoutes: Set<PathCommand> = []
            for path in paths {
                let table = configuration.tableBase + UInt32(path.index)
                desiredRules.insert(.addRule(table: table, priority: configuration.rulePriorityBase + UInt32(path.index), source: path.address))
                desiredRoutes.insert(.addRoute(table: table, gateway: gateway(for: path), interfaceIndex: path.index, source: path.address))
            }
            for rule in installedRules.subtracting(desiredRules) {
                if case .addRule(let t, let p, let s) = rule { routing.append(.deleteRule(table: t, priority: p, source: s)) }
            }
            for route in installedRoutes.subtracting(desiredRoutes) {
                if case .addRoute(let t, let g, let i, let s) = route { routing.append(.deleteRoute(table: t, gateway: g, interfaceIndex: i, source: s)) }
            }
            routing += desiredRoutes.subtracting(installedRoutes).sorted { $0.description < $1.description }
            routing += desiredRules.subtracting(installedRules).sorted { $0.description < $1.description }
            installedRules = desiredRules
            installedRoutes = desiredRoutes
        }
        // Limits from the number of paths: one subflow per extra path, bounded by the kernel's 8.
        var limitCommands: [PathCommand] = []
        let count = UInt32(min(8, max(2, paths.count + foreign.count)))  // failed paths included: they come back
        if limits == nil || limits! != (count, count) {
            limits = (count, count)
            limitCommands.append(.setLimits(subflows: count, addAddrAccepted: count))
        }
        let sort: (PathCommand, PathCommand) -> Bool = { $0.description < $1.description }
        // Order matters: routes before endpoints that need them; promotions before deletions
        // (the hitless handover); deletions before additions.
        let commands = limitCommands + routing.filter { if case .addRoute = $0 { return true }; if case .addRule = $0 { return true }; return false }
            + flagChanges.sorted(by: sort) + deletions.sorted(by: sort) + additions.sorted(by: sort)
            + routing.filter { if case .deleteRoute = $0 { return true }; if case .deleteRule = $0 { return true }; return false }
        return PathDecision(reason: reason + (promoted && !flagChanges.isEmpty ? "; no active path left, promoting standby" : ""), commands: commands)
    }
}
