import DataPlane
import Glibc
import MPTCPKernel
import PathManager
import Proxy
import TestSupport
import Testing

/// Path manager configuration for the testbed's gw: wifi carries the traffic, eth and cell are
/// standbys (class cellular, `subflow,backup`), each path routed by its own table.
func standbyConfiguration() -> PathManagerConfiguration {
    var configuration = PathManagerConfiguration()
    configuration.classifier = InterfaceClassifier(overrides: ["wifi": .wifi, "eth": .cellular, "cell": .cellular, "lan0": .other])
    for (index, name) in ["wifi", "eth", "cell"].enumerated() {
        configuration.policy.interfaces[name] = InterfacePolicy(gateway: IPAddress(parsing: "10.1.\(index + 1).2"))
    }
    return configuration
}

/// Subflows gw has towards the server (TCP sockets of MPTCP connections to port 4443).
func standbySubflows(_ testbed: Testbed) -> Int {
    let text = (try? testbed.exec(.gw, ["ss", "-tnH", "state", "established", "( dport = :4443 )"])) ?? ""
    return text.split(separator: "\n").count
}

/// Runs `transfer` while, on another thread, the active path (wifi) goes down at +1.5 s and,
/// with `flap`, eth (by then active) goes down at +3 s and up at +3.5 s. The cut happens only
/// once the connection has its standby subflows; `subflowsAtCut` says how many it had.
func duringHandover(_ chain: ProxyChain, flap: Bool, subflowsAtCut: Locked<Int>,
                    _ transfer: @escaping () throws -> TransferResult) throws -> TransferResult {
    let testbed = chain.testbed
    let cutter = OSThread(name: "cutter") {
        usleep(1_500_000)
        let subflows = standbySubflows(testbed)
        subflowsAtCut.update { $0 = subflows }
        guard subflows >= 3 else { return }
        _ = try? testbed.exec(.gw, ["ip", "link", "set", "wifi", "down"])
        guard flap else { return }
        usleep(1_500_000)
        _ = try? testbed.exec(.gw, ["ip", "link", "set", "eth", "down"])
        usleep(500_000)
        _ = try? testbed.exec(.gw, ["ip", "link", "set", "eth", "up"])
    }
    defer { cutter.join() }
    return try transfer()
}

struct HandoverCase: CustomTestStringConvertible, Sendable {
    var download: Bool
    var flap: Bool
    /// Longest stall allowed: generous, a hang or a lost handover, not a target (B4 measures
    /// the gaps against issue 13's targets). Measured here (debug build, 2026-12-02, 15 runs):
    /// download 63-111 ms and upload 9-477 ms when the active path goes down; 515-668 ms
    /// (download) and 58-522 ms (upload) when an active path of two is deleted (the kernel
    /// re-sends its whole in-flight queue, see docs/path-manager.md). Tails seen: 261 ms for
    /// the download while the whole suite ran in CI (against a bound of 150 then), 3,074 ms
    /// once for the upload with a flap (retransmission backoff on the surviving subflow).
    var maximumGap: Double
    var testDescription: String { "\(download ? "download" : "upload")\(flap ? ", then eth flaps" : "")" }
}

@Suite("Handover on the testbed", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct HandoverTests {
    @Test("the active path goes down mid-transfer: no byte lost, connection kept, stall bounded", arguments: [
        HandoverCase(download: true, flap: false, maximumGap: 1_000),
        HandoverCase(download: false, flap: false, maximumGap: 2_000),
        HandoverCase(download: true, flap: true, maximumGap: 5_000),
        HandoverCase(download: false, flap: true, maximumGap: 5_000),
    ])
    func handover(_ scenario: HandoverCase) throws {
        try withChain(pathManager: standbyConfiguration()) { chain in
            // About 5 s: 40 Mbit/s on wifi, then 30+20 after the cut.
            let size = 24 << 20
            let result: TransferResult
            let subflowsAtCut = Locked(0)
            do {
                result = try duringHandover(chain, flap: scenario.flap, subflowsAtCut: subflowsAtCut) {
                    scenario.download
                        ? try chain.transfer(upload: 0, download: size, seed: 11, timeoutSeconds: 20)
                        : try chain.transfer(upload: size, download: 0, seed: 12, timeoutSeconds: 20)
                }
            } catch {
                chain.printKernelState()
                throw error
            }
            // Every path has its subflow by the cut: the gateway holds the client's early
            // half-close until the joins are made (HalfCloseHold; once a known kernel-side
            // issue, docs/kernel-issues.md §3). Fewer means the handover was not exercised.
            try #require(subflowsAtCut.value >= 3, "only \(subflowsAtCut.value) subflow(s) 1.5 s into the transfer; handover not exercised")
            let gap = scenario.download ? result.longestReadGapMilliseconds : result.longestUploadGapMilliseconds
            print("handover \(scenario.testDescription): longest gap \(String(format: "%.0f", gap)) ms, \(String(format: "%.1f", scenario.download ? result.downloadSeconds : result.uploadSeconds)) s")
            // The digest check inside transfer() proves no byte was lost or corrupted.
            let record = try #require(chain.clientRecords.wait(for: 1).first)
            #expect(record.reason == .completed, "connection lost: \(record.reason)")
            // The standby was promoted before the dead endpoint was deleted.
            let journal = try #require(chain.pathManager).journal.all
            let promotion = journal.firstIndex { if case .setFlags(let e) = $0.command { return !e.flags.contains(.backup) }; return false }
            let deletion = journal.firstIndex { if case .deleteEndpoint(let e) = $0.command { return e.address.description == "10.1.1.1" }; return false }
            #expect(promotion != nil && deletion != nil && promotion! < deletion!, "journal: \(journal.map(\.command))")
            #expect(gap < scenario.maximumGap, "longest stall \(gap) ms")
        }
    }

    @Test("a connection to the server opened on wifi just before wifi failed starts again from another uplink, instead of waiting out its handshake deadline; every byte arrives",
          arguments: StrandedCase.all)
    func connectionOpenedAsItsUplinkFails(_ scenario: StrandedCase) throws {
        var configuration = allActiveConfiguration()
        // A link down is seen in its rtnetlink event alone; a black hole only by path health,
        // which finds the SYN unanswered or the request unacknowledged.
        if !scenario.blackHole { configuration.health = nil }
        // A black hole is found in 1-4 s (path health); a generous handshake deadline keeps a
        // slow verdict from failing the test, and the transfer's own deadline comes first.
        try withChain(pathManager: configuration, adjustClient: { $0.timeouts.handshake = 12_000 },
                      beforeStart: routeToTheServerThroughEveryUplink) { chain in
            let testbed = chain.testbed
            _ = try chain.transfer(upload: 64 << 10, download: 64 << 10, seed: 51, timeoutSeconds: 10)
            // From now on a new connection over wifi stops where its uplink is made to die:
            // - SYN: the server's SYN-ACKs do not come back over wifi, so the SYN waits;
            // - after the handshake: the gateway's third ACK and request do not leave over wifi,
            //   so the gateway has its subflow up but the server never accepted the connection,
            //   and no DATA_ACK ever comes back to let the gateway make its joins.
            let rule = scenario.afterHandshake
                ? ["oifname", "wifi", "tcp", "dport", "4443", "tcp", "flags", "&", "syn", "==", "0", "drop"]
                : ["iifname", "wifi", "tcp", "sport", "4443", "tcp", "flags", "&", "(syn|ack)", "==", "syn|ack", "drop"]
            try strand(testbed, scenario.afterHandshake ? .leaving : .arriving, rule)
            let cutAt = Locked<UInt64?>(nil)
            let state = scenario.afterHandshake ? "established" : "syn-sent"
            let cutter = OSThread(name: "cutter") {
                usleep(200_000)  // the LAN connection's dial is made within a millisecond
                for _ in 0..<100 {
                    let waiting = (try? testbed.exec(.gw, ["ss", "-tnH", "state", state, "( dport = :4443 and src 10.1.1.1 )"])) ?? ""
                    if !waiting.isEmpty { break }
                    usleep(20_000)
                }
                if scenario.blackHole { _ = try? testbed.impair("wifi", .blackhole(true)) } else { _ = try? testbed.exec(.gw, ["ip", "link", "set", "wifi", "down"]) }
                cutAt.update { $0 = monotonicMilliseconds() }
            }
            let result: TransferResult
            do {
                // Within its 10 s only if the connection starts again.
                result = try chain.transfer(upload: 1 << 20, download: 1 << 20, seed: 52, timeoutSeconds: 10)
            } catch {
                cutter.join()
                chain.printKernelState()
                throw error
            }
            let done = monotonicMilliseconds()
            cutter.join()
            let cut = try #require(cutAt.value)
            let restarts = chain.client.metrics.render().split(separator: "\n").first { $0.hasPrefix("mptcp_proxy_dial_restarts_total{") }
            print("connection opened as wifi failed (\(scenario.testDescription)): done \(done >= cut ? "\(done - cut) ms after" : "before") the cut, \(String(format: "%.2f", result.uploadSeconds)) s; \(restarts ?? "no restart counted"); verdicts \(chain.pathManager?.verdicts.withLock { $0 } ?? [])")
            // The digest check inside transfer() proved every byte arrived intact.
            #expect(restarts?.hasSuffix(" 1") == true || restarts?.hasSuffix(" 1.0") == true, "\(restarts ?? "no restart counted")")
            #expect(done >= cut, "the connection got through before wifi failed: the rule did not hold it")
        }
    }

    @Test("a connection whose request reached the server but whose answers were lost with wifi starts again with the same request, and the server refuses that copy as a replay: the LAN host is refused at once, and the request is acted on once")
    func restartedRequestTheServerHadReadIsRefusedAsAReplay() throws {
        var configuration = allActiveConfiguration()
        configuration.health = nil
        try withChain(pathManager: configuration, adjustClient: { $0.timeouts.handshake = 12_000 },
                      beforeStart: routeToTheServerThroughEveryUplink) { chain in
            let testbed = chain.testbed
            _ = try chain.transfer(upload: 64 << 10, download: 64 << 10, seed: 54, timeoutSeconds: 10)
            // From now on only the SYN-ACK of a connection over wifi comes back: the request
            // leaves and the server acts on it (it connects to the origin), but its reply and
            // every DATA_ACK are lost, so the gateway makes no join and has received nothing.
            try strand(testbed, .arriving, ["iifname", "wifi", "tcp", "sport", "4443", "tcp", "flags", "&", "(syn|ack)", "!=", "syn|ack", "drop"])
            let cutAt = Locked<UInt64?>(nil)
            let actedOn = Locked(false)
            let cutter = OSThread(name: "cutter") {
                // The server has read the request once it has connected to the origin for it.
                for _ in 0..<150 {
                    let origin = (try? testbed.exec(.origin, ["ss", "-tnH", "state", "established", "( sport = :\(ProxyChain.originPort) )"])) ?? ""
                    if !origin.isEmpty { actedOn.update { $0 = true }; break }
                    usleep(20_000)
                }
                _ = try? testbed.exec(.gw, ["ip", "link", "set", "wifi", "down"])
                cutAt.update { $0 = monotonicMilliseconds() }
            }
            var refusedAfter: UInt64?
            do {
                _ = try chain.transfer(upload: 1 << 20, download: 1 << 20, seed: 55, timeoutSeconds: 10)
                Issue.record("the transfer succeeded: its request was carried twice or never stranded")
            } catch {
                refusedAfter = monotonicMilliseconds()
                print("restarted request refused: \(error)")
            }
            cutter.join()
            try #require(actedOn.value, "the server never connected to the origin: the request did not reach it")
            let cut = try #require(cutAt.value)
            let refused = try #require(refusedAfter)
            let restarts = chain.client.metrics.render().split(separator: "\n").first { $0.hasPrefix("mptcp_proxy_dial_restarts_total{") }
            let replays = chain.serverRecords.all.filter { "\($0.reason)".contains("replay") }
            let clientEnd = chain.clientRecords.wait(for: 2).last
            print("restarted request: refused \(refused >= cut ? "\(refused - cut) ms after" : "before") the cut; \(restarts ?? "no restart counted"); server replay refusals \(replays.count); client \(clientEnd.map { "\($0.reason)" } ?? "no record")")
            #expect(restarts?.hasSuffix(" 1") == true || restarts?.hasSuffix(" 1.0") == true, "\(restarts ?? "no restart counted")")
            #expect(replays.count == 1, "server records: \(chain.serverRecords.all.map { "\($0.reason)" })")
            #expect(clientEnd.map { "\($0.reason)".contains("refused-by-server") } == true, "\(clientEnd.map { "\($0.reason)" } ?? "no record")")
            // At once: well before the 12 s handshake deadline.
            #expect(refused >= cut && refused - cut < 3_000, "refused \(Int64(refused) - Int64(cut)) ms after the cut")
            // Acted on once: one connection to the origin for it, from the first copy.
            let origins = (try? testbed.exec(.origin, ["ss", "-tnH", "( sport = :\(ProxyChain.originPort) )"])) ?? ""
            #expect(origins.split(separator: "\n").filter { !$0.contains("TIME-WAIT") }.count <= 1, "\(origins)")
        }
    }

    @Test("a server health check whose SYN waits on wifi as wifi goes down is dropped, not counted against the server, and checked again at once from another uplink")
    func healthCheckStrandedOnALostPathDoesNotCount() throws {
        var configuration = allActiveConfiguration()
        configuration.health = nil
        var health = ServerHealthSettings()
        health.fall = 1  // one failed check would take the only server down
        try withChain(pathManager: configuration, serverHealth: health, beforeStart: routeToTheServerThroughEveryUplink) { chain in
            let testbed = chain.testbed
            // Nothing but the checks talks to the server now; from here on they wait on wifi.
            try strand(testbed, .arriving, ["iifname", "wifi", "tcp", "sport", "4443", "tcp", "flags", "&", "(syn|ack)", "==", "syn|ack", "drop"])
            var stranded = false
            for _ in 0..<150 where !stranded {
                usleep(20_000)
                stranded = !((try? testbed.exec(.gw, ["ss", "-tnH", "state", "syn-sent", "( dport = :4443 and src 10.1.1.1 )"])) ?? "").isEmpty
            }
            try #require(stranded, "no health check waited on wifi")
            _ = try testbed.exec(.gw, ["ip", "link", "set", "wifi", "down"])
            // Past the stranded check's timeout (1 s) and the next check's interval.
            usleep(2_500_000)
            let servers = try #require(chain.client.serverEndpoints)
            let server = try SocketAddress(parsing: "\(Testbed.serverAddress):\(ProxyChain.serverPort)")
            let failovers = chain.client.metrics.render().split(separator: "\n").first { $0.hasPrefix("mptcp_proxy_server_failovers_total{") }
            print("health check stranded on wifi: server up \(servers.isUp(server)), \(failovers ?? "no failover count")")
            #expect(servers.isUp(server), "the stranded check counted against the server")
            #expect(failovers?.hasSuffix(" 0") == true || failovers?.hasSuffix(" 0.0") == true, "\(failovers ?? "no failover count")")
            // And LAN connections get through, every byte checked.
            _ = try chain.transfer(upload: 64 << 10, download: 64 << 10, seed: 53, timeoutSeconds: 10)
        }
    }
}

/// Which packets of the gateway a stranding rule sees: arriving (before routing) or leaving.
enum StrandHook { case arriving, leaving }

/// Installs `rule` in the gw namespace's nftables table "strand", at the earliest priority of
/// `hook`: how the tests above hold a connection at one moment of its handshake. The table goes
/// with the testbed's namespace.
func strand(_ testbed: Testbed, _ hook: StrandHook, _ rule: [String]) throws {
    let (chain, netfilterHook) = hook == .arriving ? ("in", "prerouting") : ("out", "output")
    for command in [["add", "table", "ip", "strand"],
                    ["add", "chain", "ip", "strand", chain, "{ type filter hook \(netfilterHook) priority -300; }"],
                    ["add", "rule", "ip", "strand", chain] + rule] {
        _ = try testbed.exec(.gw, ["nft"] + command)
    }
}

/// As a gateway's DHCP clients leave it: a route to the server through every uplink, wifi
/// preferred (the testbed's one route, through wifi, would vanish with it).
func routeToTheServerThroughEveryUplink(_ testbed: Testbed) throws {
    _ = try testbed.exec(.gw, ["ip", "route", "del", Testbed.serverAddress])
    for index in 1...3 {
        _ = try testbed.exec(.gw, ["ip", "route", "add", Testbed.serverAddress, "via", "10.1.\(index).2", "metric", "\(index * 100)"])
    }
}

struct StrandedCase: CustomTestStringConvertible, Sendable {
    /// Where the connection is when wifi fails: its SYN unanswered, or its subflow up and nothing back.
    var afterHandshake: Bool
    /// How: link down, or every packet dropped with the link up.
    var blackHole: Bool
    var testDescription: String { "\(afterHandshake ? "subflow up, nothing back" : "SYN unanswered"), \(blackHole ? "black hole" : "link down")" }
    static let all = [false, true].flatMap { after in [false, true].map { StrandedCase(afterHandshake: after, blackHole: $0) } }
}
