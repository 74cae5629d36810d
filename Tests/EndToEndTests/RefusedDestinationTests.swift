import ConvertProtocol
import DataPlane
import Glibc
import Logging
import Proxy
import TestSupport
import Testing

/// The server's built-in refusals, proven the hard way: in a network namespace that has only a
/// loopback interface, each refused range has an address on `lo` with a listener behind it, so
/// if a rule were broken the server would connect there — and the listener would count it —
/// while nothing could leave the namespace either way. Requests come from the real client.
@Suite("Refused destinations, in a loopback-only namespace", .serialized, .enabled(if: kernelTestsEnabled, "needs root and netns"))
struct RefusedDestinationTests {
    /// Reachable only through `lo` of the namespace: a listener sits on each.
    static let bait = [
        "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "169.254.169.254", "192.0.0.170", "198.18.0.1",
        "127.0.0.1", "203.0.113.10",  // the last one: this host's own address (not a special range)
        "fc00::1", "fd00:ec2::254", "::1", "64:ff9b::a9fe:a9fe",  // NAT64 form of the metadata address
    ]
    /// No TCP listener can sit on these; a refusal instead of "unreachable" proves the rule fired.
    static let unlistenable = ["224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "0.0.0.1", "ff02::1"]
    static let port: UInt16 = 8080

    @Test("every refused range: the LAN host is reset, the server names the rule, no listener sees a connection")
    func everyRefusedRange() throws {
        let name = "mpxrd" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try Testbed.run(["ip", "netns", "add", name])
        defer { _ = try? Testbed.run(["ip", "netns", "del", name]) }
        let namespace = NetworkNamespace(name)
        try Testbed.run(["ip", "-n", name, "link", "set", "lo", "up"])
        for address in Self.bait where address != "127.0.0.1" && address != "::1" {
            try Testbed.run(["ip", "-n", name, "addr", "add", address.contains(":") ? "\(address)/128" : "\(address)/32", "dev", "lo", "nodad"].filter { !$0.isEmpty })
        }
        usleep(200_000)  // IPv6 addresses settle
        let listeners = try Self.bait.map { try HashServer(namespace: namespace, address: SocketAddress(IPAddress(parsing: $0)!, port: Self.port)) }
        defer { listeners.forEach { $0.stop() } }

        var logger = Logger(label: "refused")
        logger.logLevel = .critical
        let key = ClientKey(id: "gw-refused", secret: Array(repeating: 0x42, count: 32))
        var serverConfiguration = ServerConfiguration(listen: [try SocketAddress(parsing: "127.0.0.1:4443")], keys: [key])
        serverConfiguration.namespace = namespace
        serverConfiguration.loops = 1
        let serverRecords = RecordLog()
        let server = ProxyServer(configuration: serverConfiguration, logger: logger, onEnd: { serverRecords.append($0) })
        try server.start()
        defer { server.shutdown(drainTimeout: 0) }
        // The host's own address (203.0.113.10) is learnt from the namespace's addresses.
        #expect(server.currentPolicy.hostAddresses.current.contains(IPAddress(parsing: "203.0.113.10")!))

        let destinations = Self.bait + Self.unlistenable
        let forwards = try destinations.enumerated().map { index, address in
            Forward(listen: SocketAddress(.v4([127, 0, 0, 1]), port: UInt16(9000 + index)), destination: SocketAddress(IPAddress(parsing: address)!, port: Self.port))
        }
        var clientConfiguration = ClientConfiguration(forwards: forwards, upstream: UpstreamEndpoint(server: try SocketAddress(parsing: "127.0.0.1:4443"), key: key))
        clientConfiguration.namespace = namespace
        clientConfiguration.loops = 1
        let clientRecords = RecordLog()
        let client = ProxyClient.makeService(clientConfiguration, logger: logger, onEnd: { clientRecords.append($0) })
        try client.start()
        defer { client.shutdown(drainTimeout: 0) }

        for (index, address) in destinations.enumerated() {
            let lanErrno = try OSThread.run(in: namespace) { () -> Int32 in
                let fd = try BlockingSocket.connect(to: forwards[index].listen, timeoutSeconds: 5)
                defer { close(fd) }
                var byte: UInt8 = 0
                return recv(fd, &byte, 1, 0) < 0 ? errno : 0
            }
            #expect(lanErrno == ECONNRESET, "\(address): the LAN host saw errno \(lanErrno)")
        }
        let records = serverRecords.wait(for: destinations.count)
        #expect(records.count == destinations.count)
        for address in destinations {
            let shown = "\(SocketAddress(IPAddress(parsing: address)!, port: Self.port))"
            guard let record = records.first(where: { $0.destination == shown }) else {
                Issue.record("no server record for \(shown)")
                continue
            }
            guard case .rejected(let error) = record.reason else {
                Issue.record("\(address): \(record.reason)")
                continue
            }
            #expect(error.code == .notAuthorized, "\(address): \(error)")
            #expect(error.reason.contains("refused by rule \"default: "), "\(address): \(error.reason)")
        }
        #expect(clientRecords.wait(for: destinations.count).allSatisfy { $0.reason == .refusedByServer(.notAuthorized) })
        for (address, listener) in zip(Self.bait, listeners) {
            #expect(listener.connectionCount == 0, "\(address): the server connected to a refused destination")
        }
    }
}
