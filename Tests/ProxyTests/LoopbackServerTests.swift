import ConvertProtocol
import DataPlane
import Foundation
import Glibc
import Logging
@testable import Proxy
import TestSupport
import Testing

/// The server's policy through real sockets on loopback: every refusal must be the right Error
/// TLV, answered at once, while keyed clients keep transferring checked bytes.
@Suite("Server policy live on loopback", .serialized)
struct LoopbackServerTests {
    static let attacker = IPAddress.v4([127, 0, 0, 2])

    @Test("a source holding handshakes open gets Resource Exceeded past its limit; a keyed client keeps transferring")
    func handshakeFlood() throws {
        try withLoopbackChain(configure: { configuration, _ in configuration.limits.maxHandshakesPerSource = 4 }) { chain in
            let forward = try chain.addClient()
            // Four connections that never send a request hold the attacker's four handshakes.
            let held = try (0..<4).map { _ in try BlockingSocket.connect(to: chain.serverAddress, timeoutSeconds: 3, from: Self.attacker) }
            defer { held.forEach { close($0) } }
            usleep(100_000)
            let started = monotonicMilliseconds()
            let reply = try LoopbackChain.exchange(chain.serverAddress, [], from: Self.attacker)
            #expect(LoopbackChain.errorCode(in: reply) == .resourceExceeded, "reply \(reply)")
            #expect(monotonicMilliseconds() - started < 1_500, "the refusal must not wait for the handshake deadline")
            let result = try HashServer.transfer(to: forward, upload: 1 << 20, download: 1 << 20, seed: 3)
            #expect(result.downloaded == 1 << 20)
        }
    }

    @Test("new connections per second per source: past the bucket, Resource Exceeded with a one-second delay")
    func ratePerSource() throws {
        try withLoopbackChain(configure: { configuration, _ in configuration.limits.newConnectionsPerSourcePerSecond = 5 }) { chain in
            var refused = 0
            for _ in 0..<30 {
                let reply = try LoopbackChain.exchange(chain.serverAddress, try LoopbackChain.request(to: SocketAddress(.v4([127, 0, 0, 1]), port: 1)), from: Self.attacker)
                if let decoded = try? ConvertMessage.decode(reply), decoded.message.error?.0 == .resourceExceeded {
                    #expect(decoded.message.error?.value == [1])
                    refused += 1
                }
            }
            #expect(refused >= 15, "refused \(refused) of 30")
        }
    }

    @Test("max connections per key: that key's next connection is refused (its LAN host reset); another key goes on")
    func perKeyLimit() throws {
        try withLoopbackChain(configure: { configuration, _ in configuration.limits.maxConnectionsPerKey = 2 }) { chain in
            let forwardA = try chain.addClient(key: LoopbackChain.keyA)
            let forwardB = try chain.addClient(key: LoopbackChain.keyB)
            // Two relaying connections of key A, held open (the origin waits for their header).
            let held = try (0..<2).map { _ in try BlockingSocket.connect(to: forwardA, timeoutSeconds: 3) }
            defer { held.forEach { close($0) } }
            #expect(waitUntil { chain.server.currentPolicy.admission.openConnections(key: LoopbackChain.keyA.id) == 2 })
            let third = try BlockingSocket.connect(to: forwardA, timeoutSeconds: 3)
            defer { close(third) }
            var byte: UInt8 = 0
            #expect(recv(third, &byte, 1, 0) < 0 && errno == ECONNRESET)
            #expect(chain.clientRecords.waitFor(.refusedByServer(.resourceExceeded)))
            let result = try HashServer.transfer(to: forwardB, upload: 100_000, download: 100_000, seed: 4)
            #expect(result.uploaded == 100_000)
        }
    }

    @Test("max connections overall: Resource Exceeded at once, without reading the request")
    func totalLimit() throws {
        try withLoopbackChain(configure: { configuration, _ in configuration.limits.maxConnections = 3 }) { chain in
            let held = try (0..<3).map { _ in try BlockingSocket.connect(to: chain.serverAddress, timeoutSeconds: 3) }
            defer { held.forEach { close($0) } }
            usleep(100_000)
            #expect(LoopbackChain.errorCode(in: try LoopbackChain.exchange(chain.serverAddress, [])) == .resourceExceeded)
        }
    }

    @Test("refused destinations name their rule; names resolve at the server and their addresses are checked too")
    func refusedDestinations() throws {
        try withLoopbackChain { chain in
            let closedPort = SocketAddress(.v4([127, 0, 0, 1]), port: 1)
            _ = try LoopbackChain.exchange(chain.serverAddress, try LoopbackChain.request(to: closedPort))
            let named = try ConvertMessage.signedRequest([.destinationName("localhost", port: chain.origin.address.port + 1)], key: LoopbackChain.keyA, timestamp: unixMilliseconds())
            let reply = try LoopbackChain.exchange(chain.serverAddress, named)
            #expect(LoopbackChain.errorCode(in: reply) == .notAuthorized)
            let records = chain.serverRecords.wait(count: 2)
            let reasons = records.map { "\($0.reason)" }
            #expect(reasons.contains { $0.contains("refused by rule \"default: loopback (127.0.0.0/8)\"") }, "\(reasons)")
            #expect(reasons.filter { $0.contains("Not Authorized") }.count == 2, "\(reasons)")
            #expect(chain.origin.connectionCount == 0)
        }
    }

    @Test("PROXY v2 towards the destination carries the LAN host's address and port; the origin decodes it")
    func proxyProtocol() throws {
        try withLoopbackChain(proxyHeader: true) { chain in
            let forward = try chain.addClient()
            let lan = IPAddress.v4([127, 0, 0, 5])
            _ = try HashServer.transfer(to: forward, upload: 5_000, download: 7_000, seed: 5, from: lan)
            let header = try #require(chain.origin.proxyHeaders.first)
            #expect(header.source?.address == lan)
            #expect(header.destination == chain.origin.address)
            // The port is the LAN host's own: the record of the client saw the same peer.
            let record = try #require(chain.clientRecords.wait(count: 1).first)
            #expect(record.peer == header.source)
        }
    }

    @Test("a pool bound to a key: members share the connections; a killed member stops getting them; all down is Network Failure")
    func pools() throws {
        try withLoopbackChain(originCount: 2, configure: { configuration, origins in
            var health = HealthCheckSettings()
            health.interval = 100
            health.timeout = 200
            health.fall = 2
            health.rise = 2
            configuration.pools = [.init(name: "web", members: origins.map(\.address), balance: .roundRobin, health: health)]
            configuration.keyPools = [LoopbackChain.keyA.id: "web"]
        }) { chain in
            // The client asks for somewhere else entirely: the pool decides.
            let forward = try chain.addClient(destination: SocketAddress(.v4([192, 0, 2, 1]), port: 80))
            for round in 0..<10 { _ = try HashServer.transfer(to: forward, upload: 10_000, download: 10_000, seed: UInt64(round)) }
            #expect(chain.origins[0].connectionCount > 0 && chain.origins[1].connectionCount > 0)
            chain.origins[0].stop()
            #expect(waitUntil { !chain.server.currentPolicy.pools["web"]!.members[0].isUp })
            // Every transfer now succeeds through the survivor (health probes connect too, so its
            // count grows by at least the ten transfers).
            let before = chain.origins[1].connectionCount
            for round in 0..<10 { _ = try HashServer.transfer(to: forward, upload: 10_000, download: 10_000, seed: UInt64(100 + round)) }
            #expect(chain.origins[1].connectionCount >= before + 10)
            chain.origins[1].stop()
            #expect(waitUntil { !chain.server.currentPolicy.pools["web"]!.members[1].isUp })
            #expect(throws: (any Error).self) { _ = try HashServer.transfer(to: forward, upload: 10, download: 10, seed: 9) }
            #expect(chain.clientRecords.waitFor(.refusedByServer(.networkFailure)))
        }
    }

    @Test("metrics on swift-prometheus, scraped with curl and checked by value")
    func metrics() throws {
        try withLoopbackChain { chain in
            let metricsServer = try MetricsServer(listen: SocketAddress(.v4([127, 0, 0, 1]), port: 0), namespace: nil, metrics: chain.server.service.metrics)
            var logger = Logger(label: "metrics")
            logger.logLevel = .critical
            metricsServer.start(logger: logger)
            defer { metricsServer.stop() }
            let forward = try chain.addClient()
            _ = try HashServer.transfer(to: forward, upload: 1000, download: 2000, seed: 1)
            _ = try LoopbackChain.exchange(chain.serverAddress, try LoopbackChain.request(to: SocketAddress(.v4([127, 0, 0, 1]), port: 1)))
            _ = try LoopbackChain.exchange(chain.serverAddress, try ConvertMessage([.connect(chain.origin.address, tcpOptions: [])]).encoded())
            _ = chain.serverRecords.wait(count: 3)
            #expect(chain.server.reload { chain.configuration })
            #expect(!chain.server.reload { throw ConfigError(file: "bad.toml", line: 3, key: "listen", "broken") })
            let text = try Testbed.run(["curl", "-sS", "--max-time", "5", "http://\(metricsServer.address)/metrics"])
            let samples = PrometheusSamples(text)
            #expect(samples.value("mptcp_proxy_refusals_total", ["rule": "default: loopback (127.0.0.0/8)"]) == 1, "\(text)")
            #expect(samples.value("mptcp_proxy_handshake_failures_total", ["reason": "missing-cookie"]) == 1)
            #expect(samples.value("mptcp_proxy_handshake_failures_total", ["reason": "not-authorized"]) == 1)
            #expect(samples.value("mptcp_proxy_key_connections_total", ["key": "gw-a"]) == 2)
            #expect(samples.value("mptcp_proxy_key_bytes_total", ["key": "gw-a", "direction": "up"]) == 1016)
            #expect(samples.value("mptcp_proxy_connections_ended_total", ["reason": "completed"]) == 1)
            #expect(samples.value("mptcp_proxy_connections", ["state": "relaying"]) == 0)
            #expect(samples.value("mptcp_proxy_connections", ["state": "handshaking"]) == 0)
            #expect(samples.value("mptcp_proxy_reloads_total", ["result": "success"]) == 1)
            #expect(samples.value("mptcp_proxy_reloads_total", ["result": "failure"]) == 1)
            #expect(samples.value("mptcp_proxy_relayed_bytes_total", ["direction": "down"]) == 2040)
        }
    }

    @Test("reload under load: hundreds of checked transfers lose nothing; a revoked key is refused at once; a bad file changes nothing")
    func reloadUnderLoad() throws {
        try withLoopbackChain { chain in
            let forwardA = try chain.addClient(key: LoopbackChain.keyA)
            let forwardB = try chain.addClient(key: LoopbackChain.keyB)
            _ = try HashServer.transfer(to: forwardB, upload: 1000, download: 1000, seed: 1)
            let failures = Shared<[String]>([])
            let done = Shared(0)
            let workers = (0..<24).map { worker in
                OSThread(name: "load-\(worker)") {
                    for round in 0..<15 {
                        let size = 1_000 + (worker * 7_919 + round * 104_729) % 300_000
                        do {
                            _ = try HashServer.transfer(to: forwardA, upload: size, download: size / 2, seed: UInt64(worker * 100 + round), timeoutSeconds: 20)
                            done.update { $0 += 1 }
                        } catch {
                            failures.update { $0.append("worker \(worker) round \(round): \(error)") }
                        }
                    }
                }
            }
            // Reloads while the transfers run: rules, limits, keys, listeners.
            let extra = SocketAddress(.v4([127, 0, 0, 1]), port: 0)
            try chain.reload { $0.rules.append(AccessRule(action: .deny, networks: [try! IPNetwork(parsing: "192.0.2.0/24")], name: "no test-net")) }
            usleep(150_000)
            try chain.reload { $0.limits.maxConnectionsPerKey = 500 }
            usleep(150_000)
            try chain.reload { $0.keys = [LoopbackChain.keyA] }   // B revoked
            let revokedAt = monotonicMilliseconds()
            #expect(throws: (any Error).self) { _ = try HashServer.transfer(to: forwardB, upload: 10, download: 10, seed: 2, timeoutSeconds: 5) }
            #expect(monotonicMilliseconds() - revokedAt < 1_000, "the revoked key must be refused at once")
            #expect(chain.clientRecords.waitFor(.refusedByServer(.notAuthorized)))
            usleep(150_000)
            try chain.reload { $0.listeners.append(.init(address: extra)) }
            usleep(150_000)
            let bad = "/tmp/mptcp-proxy-bad-\(getpid()).toml"
            FileManager.default.createFile(atPath: bad, contents: Data("listen = \"127.0.0.1:0\"\nkeys = 5\n".utf8))
            defer { unlink(bad) }
            #expect(!chain.server.reload { try ServerConfiguration.load(path: bad) })
            try chain.reload { $0.listeners.removeLast() }
            workers.forEach { $0.join() }
            #expect(failures.value.isEmpty, "\(failures.value.prefix(3))")
            #expect(done.value == 24 * 15)
            let completed = chain.serverRecords.all.filter { $0.keyID == LoopbackChain.keyA.id && $0.reason == .completed }
            #expect(completed.count == 24 * 15)
        }
    }
}

/// Polls `condition` for up to `milliseconds` (tests only).
func waitUntil(milliseconds: Int = 3_000, _ condition: () -> Bool) -> Bool {
    for _ in 0..<(milliseconds / 10) {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Prometheus text as samples: name, labels, value.
struct PrometheusSamples {
    var samples: [(name: String, labels: [String: String], value: Double)] = []

    init(_ text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let head = line[..<space]
            guard let brace = head.firstIndex(of: "{") else {
                samples.append((String(head), [:], value))
                continue
            }
            var labels: [String: String] = [:]
            var rest = head[head.index(after: brace)...].dropLast()  // without "}"
            while let equals = rest.firstIndex(of: "=") {
                let name = String(rest[..<equals]).trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                rest = rest[rest.index(equals, offsetBy: 2)...]
                var text = ""
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if c == "\\", let next = rest.first { text.append(next); rest = rest.dropFirst(); continue }
                    if c == "\"" { break }
                    text.append(c)
                }
                labels[name] = text
            }
            samples.append((String(head[..<brace]), labels, value))
        }
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
    }
}
