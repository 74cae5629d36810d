import DataPlane
import Glibc
import Logging
import MPTCPKernel
import PathManager
import TestSupport
import Testing

let kernelTestsEnabled = KernelTestGate.enabled

/// The path manager against the real kernel, in the testbed's gw namespace with no
/// endpoints or per-source routing set up by the script.
@Suite("Path manager on the kernel", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct KernelPathManagerTests {
    static func configuration(_ testbed: Testbed) -> PathManagerConfiguration {
        var configuration = PathManagerConfiguration()
        configuration.namespace = testbed.namespace(.gw)
        configuration.classifier = InterfaceClassifier(overrides: ["wifi": .wifi, "eth": .ethernet, "cell": .cellular, "lan0": .other])
        for (index, name) in ["wifi", "eth", "cell"].enumerated() {
            configuration.policy.interfaces[name] = InterfacePolicy(gateway: IPAddress(parsing: "10.1.\(index + 1).2"))
        }
        return configuration
    }

    static func endpoints(_ testbed: Testbed) throws -> [String: EndpointFlags] {
        try OSThread.run(in: testbed.namespace(.gw)) {
            Dictionary(uniqueKeysWithValues: try PathManagerClient().endpoints().map { ($0.address.description, $0.flags) })
        }
    }

    /// Polls (bounded) until `condition` holds for the endpoints; returns the last reading.
    static func waitFor(_ testbed: Testbed, _ condition: ([String: EndpointFlags]) -> Bool) throws -> [String: EndpointFlags] {
        var last: [String: EndpointFlags] = [:]
        for _ in 0..<100 {
            last = try endpoints(testbed)
            if condition(last) { return last }
            usleep(20_000)
        }
        return last
    }

    @Test("endpoints follow addresses and links; routing is restored; shutdown leaves nothing")
    func endpointsFollowInterfaces() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        var logger = Logger(label: "pm-test")
        logger.logLevel = .warning
        let manager = PathManagerService(configuration: Self.configuration(testbed), logger: logger)
        try manager.start()
        var stopped = false
        defer { if !stopped { manager.stop() } }

        let initial = try Self.endpoints(testbed)
        #expect(initial == ["10.1.1.1": [.subflow], "10.1.2.1": [.subflow], "10.1.3.1": [.subflow, .backup]])
        let rules = try testbed.exec(.gw, ["ip", "rule", "show"])
        #expect(rules.contains("from 10.1.2.1 lookup"), "\(rules)")
        let limits = try OSThread.run(in: testbed.namespace(.gw)) { try PathManagerClient().limits() }
        #expect(limits.subflows == 3 && limits.addAddrAccepted == 3)

        // An address removed removes its endpoint.
        try testbed.exec(.gw, ["ip", "addr", "del", "10.1.2.1/24", "dev", "eth"])
        #expect(try Self.waitFor(testbed) { $0["10.1.2.1"] == nil }["10.1.2.1"] == nil)

        // Wi-Fi down: with eth gone too, the cellular standby is promoted and wifi's endpoint deleted.
        try testbed.exec(.gw, ["ip", "link", "set", "wifi", "down"])
        let promoted = try Self.waitFor(testbed) { $0["10.1.1.1"] == nil && $0["10.1.3.1"] == [.subflow] }
        #expect(promoted == ["10.1.3.1": [.subflow]], "after wifi down: \(promoted)")

        // Wi-Fi back: its route and endpoint return, cellular is a standby again.
        try testbed.exec(.gw, ["ip", "link", "set", "wifi", "up"])
        let back = try Self.waitFor(testbed) { $0["10.1.1.1"] == [.subflow] && $0["10.1.3.1"] == [.subflow, .backup] }
        #expect(back == ["10.1.1.1": [.subflow], "10.1.3.1": [.subflow, .backup]], "after wifi up: \(back)")
        let table = try testbed.exec(.gw, ["ip", "route", "show", "table", "all"])
        #expect(table.contains("default via 10.1.1.2 dev wifi table"), "\(table)")

        manager.stop()
        stopped = true
        #expect(try Self.endpoints(testbed).isEmpty)
        #expect(!(try testbed.exec(.gw, ["ip", "rule", "show"])).contains("from 10.1."))
    }

    @Test("a netlink overrun is survived: the host is re-read and an interface deleted in the burst loses its endpoint")
    func overrunResync() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        // burst0 (a veth whose peer stays in gw): a managed uplink with one path address and 300 link-local ones, which are no
        // paths but each cost a message when the link is deleted: one kernel operation queues
        // 300 RTM_DELADDRs at once, far more than a 1-byte (clamped to the kernel's minimum)
        // receive buffer holds.
        var batch = "link add burst0 type veth peer name burst1\nlink set burst1 up\nlink set burst0 up\naddr add 10.77.0.1/24 dev burst0\n"
        for i in 1...300 { batch += "addr add fe80::\(String(i, radix: 16))/64 dev burst0\n" }
        let batchFile = "/tmp/mptcp-proxy-burst-\(getpid()).batch"
        try batch.write(toFile: batchFile, atomically: true, encoding: .utf8)
        defer { unlink(batchFile) }
        try testbed.exec(.gw, ["ip", "-batch", batchFile])
        var configuration = Self.configuration(testbed)
        configuration.classifier = InterfaceClassifier(overrides: ["wifi": .wifi, "eth": .ethernet, "cell": .cellular, "lan0": .other, "burst0": .ethernet])
        configuration.monitorReceiveBufferBytes = 1
        var logger = Logger(label: "pm-test")
        logger.logLevel = .error
        let manager = PathManagerService(configuration: configuration, logger: logger)
        try manager.start()
        defer { manager.stop() }
        #expect(try Self.waitFor(testbed) { $0["10.77.0.1"] != nil }["10.77.0.1"] == [.subflow])

        try testbed.exec(.gw, ["ip", "link", "del", "burst0"])
        let after = try Self.waitFor(testbed) { $0["10.77.0.1"] == nil }
        #expect(manager.resyncs.load(ordering: .relaxed) >= 1, "the burst did not overrun the monitor: this test proved nothing")
        #expect(after == ["10.1.1.1": [.subflow], "10.1.2.1": [.subflow], "10.1.3.1": [.subflow, .backup]], "after the burst: \(after)")
        // The re-read did not disturb the other paths' routing.
        let routes = try testbed.exec(.gw, ["ip", "route", "show", "table", "all"])
        #expect(routes.contains("default via 10.1.2.2 dev eth table"), "\(routes)")
    }

    @Test("without --gateway, each uplink's table takes the next hop of its default route in the main table, as a DHCP client leaves it")
    func gatewaysLearnedFromMainTable() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        // What two DHCP clients leave behind: a default route per uplink, by metric.
        try testbed.exec(.gw, ["ip", "route", "add", "default", "via", "10.1.2.2", "dev", "eth", "metric", "100"])
        try testbed.exec(.gw, ["ip", "route", "add", "default", "via", "10.1.1.2", "dev", "wifi", "metric", "600"])
        var configuration = Self.configuration(testbed)
        for name in ["wifi", "eth", "cell"] { configuration.policy.interfaces[name] = nil }
        var logger = Logger(label: "pm-test")
        logger.logLevel = .error
        let manager = PathManagerService(configuration: configuration, logger: logger)
        try manager.start()
        defer { manager.stop() }
        func tableRoutes() throws -> [String] {
            try testbed.exec(.gw, ["ip", "route", "show", "table", "all"]).split(separator: "\n")
                .map(String.init).filter { $0.hasPrefix("default") && !$0.contains("table main") && $0.contains("table 10") }
        }
        func waitForRoutes(_ condition: ([String]) -> Bool) throws -> [String] {
            var last: [String] = []
            for _ in 0..<100 {
                last = try tableRoutes()
                if condition(last) { return last }
                usleep(20_000)
            }
            return last
        }
        let learned = try waitForRoutes { routes in routes.contains { $0.contains("via 10.1.1.2 dev wifi") } && routes.contains { $0.contains("via 10.1.2.2 dev eth") } }
        #expect(learned.contains { $0.contains("via 10.1.1.2 dev wifi") }, "\(learned)")
        #expect(learned.contains { $0.contains("via 10.1.2.2 dev eth") }, "\(learned)")
        // cell has no default route anywhere: on-link.
        #expect(learned.contains { $0.hasPrefix("default dev cell") }, "\(learned)")

        // The lease on wifi ends: its table goes on-link; a new lease brings the next hop back.
        try testbed.exec(.gw, ["ip", "route", "del", "default", "via", "10.1.1.2", "dev", "wifi", "metric", "600"])
        let forgotten = try waitForRoutes { $0.contains { $0.hasPrefix("default dev wifi") } }
        #expect(forgotten.contains { $0.hasPrefix("default dev wifi") }, "\(forgotten)")
        try testbed.exec(.gw, ["ip", "route", "add", "default", "via", "10.1.1.2", "dev", "wifi", "metric", "600"])
        let relearned = try waitForRoutes { $0.contains { $0.contains("via 10.1.1.2 dev wifi") } }
        #expect(relearned.contains { $0.contains("via 10.1.1.2 dev wifi") }, "\(relearned)")
    }

    @Test("the kernel's own error text surfaces in our error")
    func kernelErrorText() throws {
        let testbed = try Testbed(endpoints: false)
        defer { testbed.down() }
        let failure = try OSThread.run(in: testbed.namespace(.gw)) { () -> NetlinkError? in
            let client = try PathManagerClient()
            do {
                try client.delete(MPTCPEndpoint(id: 42, address: IPAddress(parsing: "10.1.1.1")!, flags: []))
                return nil
            } catch {
                return error as? NetlinkError
            }
        }
        let error = try #require(failure)
        #expect(error.errno == EINVAL)
        #expect(error.kernelMessage.contains("address not found"), "\(error)")
        #expect(error.description.hasPrefix("DEL_ADDR id 42"))
        let limit = try OSThread.run(in: testbed.namespace(.gw)) { () -> NetlinkError? in
            do { try PathManagerClient().setLimits(subflows: 9, addAddrAccepted: 1); return nil } catch { return error as? NetlinkError }
        }
        #expect(limit?.kernelMessage.contains("limit greater than maximum") == true, "\(String(describing: limit))")
    }
}
