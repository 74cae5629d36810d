import DataPlane
import Glibc
import Proxy
import TestSupport
import Testing

/// A VPS that dies as they do: silently (its packets dropped, no reset), here with nftables in
/// vps on the port of one of two servers.
struct SilencedPorts {
    let testbed: Testbed

    /// Drops every packet to these ports from now on (none: drops nothing).
    func set(_ ports: [UInt16]) throws {
        _ = try? testbed.exec(.vps, ["nft", "delete", "table", "inet", "failover"])
        guard !ports.isEmpty else { return }
        let set = ports.map(String.init).joined(separator: ", ")
        let script = """
        table inet failover {
            chain input {
                type filter hook input priority -10; policy accept;
                tcp dport { \(set) } drop
            }
        }
        """
        _ = try testbed.exec(.vps, ["sh", "-c", "printf '%s\\n' '\(script)' | nft -f -"])
    }
}

/// Milliseconds until `condition` holds (checked every 10 ms), or nil after `seconds`.
func millisecondsUntil(seconds: Double, _ condition: () -> Bool) -> UInt64? {
    let start = monotonicMilliseconds()
    let deadline = start + UInt64(seconds * 1000)
    while monotonicMilliseconds() < deadline {
        if condition() { return monotonicMilliseconds() - start }
        usleep(10_000)
    }
    return nil
}

@Suite("Several servers on the testbed", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct ServerFailoverTests {
    static let secondPort: UInt16 = 4444

    static var health: ServerHealthSettings {
        var settings = ServerHealthSettings()
        settings.interval = 200
        settings.timeout = 300
        settings.rise = 2
        settings.fall = 2
        settings.attemptTimeout = 400
        return settings
    }

    func metric(_ chain: ProxyChain, _ name: String, port: UInt16) -> String? {
        let prefix = "\(name){role=\"client\",server=\"\(Testbed.serverAddress):\(port)\"} "
        return chain.client.metrics.render().split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    func chosen(_ chain: ProxyChain, port: UInt16) -> Bool { metric(chain, "mptcp_proxy_server_chosen", port: port) == "1.0" }
    func up(_ chain: ProxyChain, port: UInt16) -> Bool { metric(chain, "mptcp_proxy_server_up", port: port) == "1.0" }

    @Test("a silent server: new connections move to the next within one attempt, a transfer on the survivor is untouched, the first takes new connections again, none left is an immediate reset")
    func failover() throws {
        // Slow links: the long transfer must outlast the first server's return, and must not
        // take the CPU from timing-sensitive suites running beside this one.
        try withChain(rates: Testbed.Rates(wifi: "4mbit", eth: "4mbit", cell: "4mbit"), extraServerPorts: [Self.secondPort], serverHealth: Self.health) { chain in
            let first = ProxyChain.serverPort, second = Self.secondPort
            let firstRecords = chain.serverRecords, secondRecords = chain.extraServerRecords[0]
            let ports = SilencedPorts(testbed: chain.testbed)
            #expect(millisecondsUntil(seconds: 2) { chosen(chain, port: first) } != nil)

            // Both up: the first in the list serves.
            _ = try chain.transfer(upload: 50_000, download: 50_000, seed: 1)
            #expect(relayed(firstRecords, 1).count == 1 && relayed(secondRecords, 0).isEmpty)

            // The first goes silent. The next connection waits one attempt (400 ms) for it, then
            // the second server answers; every byte still checked.
            try ports.set([first])
            let failedOverAt = monotonicMilliseconds()
            _ = try chain.transfer(upload: 50_000, download: 50_000, seed: 2)
            let firstAfterFailure = monotonicMilliseconds() - failedOverAt
            #expect(relayed(secondRecords, 1).count == 1)
            #expect(firstAfterFailure < 1_500, "the first connection after the failure took \(firstAfterFailure) ms")

            // The checks (and that connection) mark it down: later connections go straight to the second.
            let markedDown = millisecondsUntil(seconds: 3) { !up(chain, port: first) && chosen(chain, port: second) }
            #expect(markedDown != nil, "the silent server was never marked down:\n\(chain.client.metrics.render())")
            let direct = monotonicMilliseconds()
            _ = try chain.transfer(upload: 10_000, download: 10_000, seed: 3)
            let directMilliseconds = monotonicMilliseconds() - direct
            #expect(directMilliseconds < 300, "with the first marked down a connection took \(directMilliseconds) ms")
            #expect(relayed(secondRecords, 2).count == 2)

            // A long transfer on the survivor while the first comes back: it stays where it is.
            let size = 1 << 20
            let long = Locked<Result<TransferResult, TransferFailure>?>(nil)
            let address = chain.forwardAddress
            let runner = OSThread(name: "long", namespace: chain.testbed.namespace(.lan)) {
                do {
                    let result = try HashServer.transfer(to: address, upload: size, download: size, seed: 4, timeoutSeconds: 60)
                    long.update { $0 = .success(result) }
                } catch {
                    long.update { $0 = .failure(TransferFailure(description: "\(error)")) }
                }
            }
            defer { runner.join() }
            #expect(millisecondsUntil(seconds: 3) { secondActive(chain) } != nil)
            try ports.set([])
            let returned = millisecondsUntil(seconds: 3) { up(chain, port: first) && chosen(chain, port: first) }
            #expect(returned != nil, "the first server never came back")
            // On a loaded machine (CI runs suites side by side) the first attempt at the server that
            // just came back can outlast the 400 ms attempt timeout and go on to the second (seen
            // once in four clean CI runs): the returning server must take one of the next three.
            var triedAfterReturn = 0
            repeat {
                triedAfterReturn += 1
                _ = try chain.transfer(upload: 10_000, download: 10_000, seed: 5)
            } while millisecondsUntil(seconds: 0.5, { relayedCount(firstRecords) >= 2 }) == nil && triedAfterReturn < 3
            #expect(relayed(firstRecords, 2).count == 2, "a new connection goes to the first server once it is back")
            runner.join()
            switch long.value {
            case .success(let result)?: #expect(result.uploaded == size && result.downloaded == size)
            case .failure(let failure)?: Issue.record("the transfer on the second server failed: \(failure.description)")
            case nil: Issue.record("the long transfer never ended")
            }
            // Two short transfers and the long one, and any try after the return that went there.
            let expectedOnSecond = 3 + triedAfterReturn - 1
            let secondEnds = relayed(secondRecords, expectedOnSecond)
            #expect(secondEnds.count == expectedOnSecond && secondEnds.allSatisfy { $0.reason == .completed }, "\(secondEnds.map(\.reason))")

            // Both silent: once the checks see it, a LAN connection is reset at once, not held.
            try ports.set([first, second])
            let bothDown = millisecondsUntil(seconds: 3) { !up(chain, port: first) && !up(chain, port: second) }
            #expect(bothDown != nil, "both servers silent but not both marked down")
            let refusedAt = monotonicMilliseconds()
            let errno = try chain.lanReadErrno()
            let refusal = monotonicMilliseconds() - refusedAt
            #expect(errno == ECONNRESET, "errno \(errno)")
            #expect(refusal < 200, "refusal took \(refusal) ms")
            #expect(chain.server.service.metrics.render().contains("mptcp_proxy_info_exchanges_total{role=\"server\"}"),
                    "the checks are Info exchanges the server counts")
            let text = chain.client.metrics.render()
            #expect(text.contains("mptcp_proxy_server_failovers_total{role=\"client\"}"))
            print("failover: first connection after the silence \(firstAfterFailure) ms, marked down after \(markedDown ?? 0) ms, then \(directMilliseconds) ms per connection; back after \(returned ?? 0) ms; refusal with none up \(refusal) ms")
        }
    }

    /// The connections a server relayed, once `count` of them have ended (bounded wait). Its
    /// Info exchanges are no connection records (the filter says so once more).
    func relayedCount(_ log: RecordLog) -> Int { log.all.filter { $0.target != nil }.count }

    func relayed(_ log: RecordLog, _ count: Int) -> [ConnectionRecord] {
        _ = millisecondsUntil(seconds: count == 0 ? 0.2 : 10) { log.all.filter { $0.target != nil }.count >= count }
        return log.all.filter { $0.target != nil }
    }

    /// The second server relays a connection now.
    func secondActive(_ chain: ProxyChain) -> Bool {
        chain.extraServers[0].service.metrics.render().contains("mptcp_proxy_connections{role=\"server\",state=\"relaying\"} 1")
    }
}

struct TransferFailure: Error, Sendable {
    var description: String
}
