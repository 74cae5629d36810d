import DataPlane
import MPTCPKernel
@testable import PathManager
import Testing

/// The policy driven by synthetic events: no kernel involved.
@Suite("Path policy")
struct PathPolicyTests {
    static let up: UInt32 = 0x1 | 0x40 | 0x10000
    let wifi = LinkState(index: 3, name: "wlan0", flags: up, operState: 6)
    let eth = LinkState(index: 4, name: "eth0", flags: up, operState: 6)
    let cell = LinkState(index: 5, name: "wwan0", flags: up, operState: 6)
    let wifiAddress = IPAddress(parsing: "192.168.1.10")!
    let ethAddress = IPAddress(parsing: "10.0.0.10")!
    let cellAddress = IPAddress(parsing: "100.64.0.10")!

    func classify(_ name: String) -> InterfaceClass {
        ["wlan0": .wifi, "eth0": .ethernet, "wwan0": .cellular][name] ?? .other
    }

    func addresses() -> [InterfaceAddress] {
        [InterfaceAddress(interfaceIndex: 3, address: wifiAddress, prefixLength: 24),
         InterfaceAddress(interfaceIndex: 4, address: ethAddress, prefixLength: 24),
         InterfaceAddress(interfaceIndex: 5, address: cellAddress, prefixLength: 24),
         InterfaceAddress(interfaceIndex: 3, address: IPAddress(parsing: "fe80::1")!, prefixLength: 64)]
    }

    func down(_ link: LinkState) -> LinkState {
        var copy = link
        copy.flags = 0x1002 & ~0x1
        copy.operState = 2
        return copy
    }

    func endpoints(in decision: PathDecision) -> [PathCommand] {
        decision.commands.filter {
            switch $0 {
            case .addEndpoint, .deleteEndpoint, .setFlags: return true
            default: return false
            }
        }
    }

    @Test("start-up: one endpoint per usable address, flags by class, routing and limits")
    func startUp() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        let decision = policy.start(links: [wifi, eth, cell], addresses: addresses(), existing: [], classify: classify)
        #expect(endpoints(in: decision) == [
            .addEndpoint(MPTCPEndpoint(id: 3, address: cellAddress, flags: [.subflow, .backup], interfaceIndex: 5)),
            .addEndpoint(MPTCPEndpoint(id: 2, address: ethAddress, flags: [.subflow], interfaceIndex: 4)),
            .addEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3)),
        ].sorted { $0.description < $1.description })
        #expect(decision.commands.first == .setLimits(subflows: 3, addAddrAccepted: 3))
        #expect(decision.commands.contains(.addRule(table: 1003, priority: 1003, source: wifiAddress)))
        #expect(decision.commands.contains(.addRoute(table: 1004, gateway: nil, interfaceIndex: 4, source: ethAddress)))
        // Link-local addresses carry no uplink.
        #expect(!decision.commands.description.contains("fe80"))
    }

    @Test("losing one of two active paths deletes it without promoting the standby")
    func activeLost() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wifi, eth, cell], addresses: addresses(), existing: [], classify: classify)
        let decision = policy.linkChanged(down(wifi), classify: classify)
        #expect(endpoints(in: decision) == [.deleteEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3))])
        #expect(decision.commands.contains(.deleteRule(table: 1003, priority: 1003, source: wifiAddress)))
    }

    @Test("losing the last active path promotes the standby first, then deletes the dead endpoint")
    func promotionBeforeDeletion() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wifi, cell], addresses: addresses(), existing: [], classify: classify)
        let decision = policy.linkChanged(down(wifi), classify: classify)
        let order = endpoints(in: decision)
        #expect(order == [
            .setFlags(MPTCPEndpoint(id: 2, address: cellAddress, flags: [.subflow], interfaceIndex: 5)),
            .deleteEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3)),
        ])
        #expect(decision.reason.contains("promoting standby"))

        // The link returns: its route comes back, its endpoint (same id) too, the standby is a standby again.
        let back = policy.linkChanged(wifi, classify: classify)
        #expect(back.commands.contains(.addRoute(table: 1003, gateway: nil, interfaceIndex: 3, source: wifiAddress)))
        #expect(endpoints(in: back) == [
            .setFlags(MPTCPEndpoint(id: 2, address: cellAddress, flags: [.subflow, .backup], interfaceIndex: 5)),
            .addEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3)),
        ])
    }

    @Test("an address removed removes its endpoint and rule; added back, both return")
    func addressLifecycle() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wifi, eth], addresses: addresses(), existing: [], classify: classify)
        let removed = policy.addressChanged(InterfaceAddress(interfaceIndex: 4, address: ethAddress, prefixLength: 24, deleted: true))
        #expect(endpoints(in: removed) == [.deleteEndpoint(MPTCPEndpoint(id: 2, address: ethAddress, flags: [.subflow], interfaceIndex: 4))])
        #expect(removed.commands.contains(.deleteRule(table: 1004, priority: 1004, source: ethAddress)))
        let added = policy.addressChanged(InterfaceAddress(interfaceIndex: 4, address: ethAddress, prefixLength: 24))
        #expect(endpoints(in: added) == [.addEndpoint(MPTCPEndpoint(id: 2, address: ethAddress, flags: [.subflow], interfaceIndex: 4))])
    }

    @Test("endpoints of other managers are left alone unless told to own them all")
    func foreignEndpoints() {
        let theirs = MPTCPEndpoint(id: 7, address: ethAddress, flags: [.signal], interfaceIndex: 4)
        var polite = PathPolicy(configuration: PathPolicyConfiguration())
        let decision = polite.start(links: [wifi, eth], addresses: addresses(), existing: [theirs], classify: classify)
        #expect(!endpoints(in: decision).contains { $0.description.contains(ethAddress.description) })
        #expect(endpoints(in: polite.shutdown()) == [.deleteEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3))])

        var configuration = PathPolicyConfiguration()
        configuration.ownAllEndpoints = true
        var owner = PathPolicy(configuration: configuration)
        let taken = owner.start(links: [wifi, eth], addresses: addresses(), existing: [theirs], classify: classify)
        #expect(taken.commands.first == .deleteEndpoint(theirs))
    }

    @Test("unknown and virtual interfaces are ignored unless configured; per-interface flags and gateways apply")
    func configuration() {
        let veth = LinkState(index: 9, name: "veth7", flags: Self.up, operState: 6)
        let vethAddress = IPAddress(parsing: "10.9.0.1")!
        var ignoring = PathPolicy(configuration: PathPolicyConfiguration())
        #expect(endpoints(in: ignoring.start(links: [veth], addresses: [InterfaceAddress(interfaceIndex: 9, address: vethAddress, prefixLength: 24)], existing: [], classify: classify)).isEmpty)

        var configuration = PathPolicyConfiguration()
        configuration.interfaces["veth7"] = InterfacePolicy(flags: [.subflow, .fullmesh], gateway: IPAddress(parsing: "10.9.0.2"))
        var configured = PathPolicy(configuration: configuration)
        let decision = configured.start(links: [veth], addresses: [InterfaceAddress(interfaceIndex: 9, address: vethAddress, prefixLength: 24)], existing: [], classify: classify)
        #expect(endpoints(in: decision) == [.addEndpoint(MPTCPEndpoint(id: 1, address: vethAddress, flags: [.subflow, .fullmesh], interfaceIndex: 9))])
        #expect(decision.commands.contains(.addRoute(table: 1009, gateway: IPAddress(parsing: "10.9.0.2"), interfaceIndex: 9, source: vethAddress)))
    }

    @Test("after a netlink overrun the re-read state wins: a lost link-down and a lost address removal are acted on, routes re-added")
    func resyncAfterOverrun() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wifi, eth, cell], addresses: addresses(), existing: [], classify: classify)
        // Lost while the monitor overran: wifi went down, eth lost its address.
        let surviving = addresses().filter { $0.address != ethAddress }
        let decision = policy.resync(links: [down(wifi), eth, cell], addresses: surviving, classify: classify)
        #expect(decision.reason.contains("overrun"))
        let changes = endpoints(in: decision)
        // Only cell is left, and it is a standby: promoted before the dead ones go.
        #expect(changes.first == .setFlags(MPTCPEndpoint(id: 3, address: cellAddress, flags: [.subflow], interfaceIndex: 5)))
        #expect(Set(changes.dropFirst()) == [
            .deleteEndpoint(MPTCPEndpoint(id: 1, address: wifiAddress, flags: [.subflow], interfaceIndex: 3)),
            .deleteEndpoint(MPTCPEndpoint(id: 2, address: ethAddress, flags: [.subflow], interfaceIndex: 4)),
        ])
        // The surviving path's route is sent again: the dump cannot show whether a lost
        // link flap took it.
        #expect(decision.commands.contains(.addRoute(table: 1005, gateway: nil, interfaceIndex: 5, source: cellAddress)))
        #expect(decision.commands.contains(.deleteRule(table: 1003, priority: 1003, source: wifiAddress)))
        // Nothing more happened: a second resync of the same state changes no endpoint.
        let again = policy.resync(links: [down(wifi), eth, cell], addresses: surviving, classify: classify)
        #expect(endpoints(in: again).isEmpty)
    }

    @Test("gateways are learned from the main table's default routes (lowest metric), configuration wins, link down forgets them")
    func learnedGateways() {
        let router = IPAddress(parsing: "192.168.1.1")!
        let other = IPAddress(parsing: "192.168.1.254")!
        let dhcp = RouteEntry(family: 2, destinationPrefixLength: 0, table: RouteEntry.mainTable, gateway: router, interfaceIndex: 3, priority: 600)
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        let start = policy.start(links: [wifi, eth, cell], addresses: addresses(), routes: [dhcp], existing: [], classify: classify)
        #expect(start.commands.contains(.addRoute(table: 1003, gateway: router, interfaceIndex: 3, source: wifiAddress)))
        // Uplinks without a default route stay on-link.
        #expect(start.commands.contains(.addRoute(table: 1004, gateway: nil, interfaceIndex: 4, source: ethAddress)))

        // A second default route with a lower metric on the same link takes over.
        var better = dhcp
        better.gateway = other
        better.priority = 100
        let switched = policy.routeChanged(better)
        #expect(switched.reason.contains("gateway 192.168.1.254 of wlan0 learned"))
        #expect(switched.commands.contains(.addRoute(table: 1003, gateway: other, interfaceIndex: 3, source: wifiAddress)))
        #expect(switched.commands.contains(.deleteRoute(table: 1003, gateway: router, interfaceIndex: 3, source: wifiAddress)))
        // Routes of other tables, and non-default routes, change nothing.
        var ours = better
        ours.table = 1003
        #expect(policy.routeChanged(ours).commands.isEmpty)
        var subnet = better
        subnet.destinationPrefixLength = 24
        #expect(policy.routeChanged(subnet).commands.isEmpty)
        // Deleted, the earlier one is used again.
        var gone = better
        gone.deleted = true
        #expect(policy.routeChanged(gone).commands.contains(.addRoute(table: 1003, gateway: router, interfaceIndex: 3, source: wifiAddress)))

        // Link down takes the kernel's routes with it (IPv4 sends no RTM_DELROUTE): back up
        // with no new lease yet, the route is on-link until one is learned.
        _ = policy.linkChanged(down(wifi), classify: classify)
        let back = policy.linkChanged(wifi, classify: classify)
        #expect(back.commands.contains(.addRoute(table: 1003, gateway: nil, interfaceIndex: 3, source: wifiAddress)))

        // A configured gateway wins over a learned one.
        var configuration = PathPolicyConfiguration()
        configuration.interfaces["wlan0"] = InterfacePolicy(gateway: other)
        var configured = PathPolicy(configuration: configuration)
        let decision = configured.start(links: [wifi], addresses: addresses(), routes: [dhcp], existing: [], classify: classify)
        #expect(decision.commands.contains(.addRoute(table: 1003, gateway: other, interfaceIndex: 3, source: wifiAddress)))
    }

    @Test("shutdown leaves the host as found")
    func shutdown() {
        var policy = PathPolicy(configuration: PathPolicyConfiguration())
        _ = policy.start(links: [wifi, eth, cell], addresses: addresses(), existing: [], classify: classify)
        let decision = policy.shutdown()
        #expect(endpoints(in: decision).count == 3)
        #expect(decision.commands.filter { if case .deleteRule = $0 { return true }; return false }.count == 3)
        #expect(decision.commands.filter { if case .deleteRoute = $0 { return true }; return false }.count == 3)
        #expect(policy.installed.isEmpty)
    }
}

@Suite("Interface classification")
struct InterfaceClassifierTests {
    struct FakeSysfs: InterfaceFacts {
        var files: [String: String] = [:]
        var links: [String: String] = [:]
        func exists(_ path: String) -> Bool { files[path] != nil }
        func read(_ path: String) -> String? { files[path] }
        func linkTarget(_ path: String) -> String? { links[path] }
    }

    @Test("sysfs facts, then names, then configuration overrides")
    func classify() {
        let facts = FakeSysfs(
            files: [
                "/sys/class/net/wlp2s0/phy80211": "",
                "/sys/class/net/wlan1/uevent": "DEVTYPE=wlan\nINTERFACE=wlan1\n",
                "/sys/class/net/wwan0/uevent": "DEVTYPE=wwan\n",
            ],
            links: [
                "/sys/class/net/enp3s0/device/driver": "../../../bus/pci/drivers/r8169",
                "/sys/class/net/usb0/device/driver": "../../../bus/usb/drivers/cdc_ether",
                "/sys/class/net/eth1/device/driver": "../../../bus/usb/drivers/qmi_wwan",
            ])
        let classifier = InterfaceClassifier(overrides: ["veth0": .cellular])
        #expect(classifier.classify("wlp2s0", facts: facts) == .wifi)
        #expect(classifier.classify("wlan1", facts: facts) == .wifi)
        #expect(classifier.classify("wwan0", facts: facts) == .cellular)
        #expect(classifier.classify("usb0", facts: facts) == .cellular)
        #expect(classifier.classify("eth1", facts: facts) == .cellular)
        #expect(classifier.classify("rmnet_data0", facts: facts) == .cellular)
        #expect(classifier.classify("enp3s0", facts: facts) == .ethernet)
        #expect(classifier.classify("veth1", facts: facts) == .other)
        #expect(classifier.classify("veth0", facts: facts) == .cellular)
    }
}
