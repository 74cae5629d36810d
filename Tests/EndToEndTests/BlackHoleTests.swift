import DataPlane
import Foundation
import Glibc
import MPTCPKernel
import PathManager
import TestSupport
import Testing

/// Path manager configuration for the testbed's gw with every path active (the arrangement
/// people choose to aggregate fixed lines), with path health on.
func allActiveConfiguration() -> PathManagerConfiguration {
    var configuration = standbyConfiguration()
    configuration.classifier = InterfaceClassifier(overrides: ["wifi": .wifi, "eth": .ethernet, "cell": .ethernet, "lan0": .other])
    configuration.health = PathHealthConfiguration()  // opt-in (`--path-health`)
    return configuration
}

/// Subflows gw has from `source` to the server that are established now.
func establishedSubflows(_ testbed: Testbed, from source: String) -> Int {
    let text = (try? testbed.exec(.gw, ["ss", "-tnH", "state", "established", "( dport = :4443 and src \(source) )"])) ?? ""
    return text.split(separator: "\n").count
}

@Suite("Black holes on the testbed", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct BlackHoleTests {
    @Test("wifi drops everything for 3 s while its link stays up, mid-upload: it is found dead, taken out, put back once it recovers, and a new wifi subflow joins the running connection; every byte arrives")
    func blackHoledPathIsDetectedAndReadmitted() throws {
        var configuration = allActiveConfiguration()
        // Tried again every 2 s + the join timeout while it is still dead, so the test sees the
        // return within seconds of the recovery.
        configuration.health?.maximumHoldDownMilliseconds = 2_000
        try withChain(pathManager: configuration) { chain in
            let testbed = chain.testbed
            let size = 64 << 20
            let wifiSubflowsAfterReturn = Locked(-1)
            let cutter = OSThread(name: "black-hole") {
                usleep(1_000_000)
                _ = try? testbed.impair("wifi", .blackhole(true))
                usleep(3_000_000)
                _ = try? testbed.impair("wifi", .blackhole(false))
                // At most one hold-down and a join timeout later, wifi is back in use and the
                // kernel has opened a wifi subflow on the running connection again.
                usleep(3_500_000)
                wifiSubflowsAfterReturn.update { $0 = establishedSubflows(testbed, from: "10.1.1.1") }
            }
            let result: TransferResult
            do {
                result = try chain.transfer(upload: size, download: 0, seed: 21, timeoutSeconds: 60)
            } catch {
                cutter.join()
                chain.printKernelState()
                throw error
            }
            cutter.join()
            let manager = try #require(chain.pathManager)
            let verdicts = manager.verdicts.withLock { $0 }
            let dumps = manager.sampleDumps.load(ordering: .relaxed)
            let lookups = manager.sampleLookups.load(ordering: .relaxed)
            print("black hole on wifi, upload: longest gap \(String(format: "%.0f", result.longestUploadGapMilliseconds)) ms, \(String(format: "%.1f", result.uploadSeconds)) s; verdicts \(verdicts); samples: \(dumps) dumps, \(lookups) by lookup")
            // Between dumps (at most every 2 s, and in the second after each re-admission),
            // the subflows the MPTCP events named are looked up by key.
            #expect(lookups > 0, "the watch list never replaced a dump: \(dumps) dumps, \(lookups) by lookup")
            // The digest check inside transfer() proved every byte arrived intact.
            let record = try #require(chain.clientRecords.wait(for: 1).first)
            #expect(record.reason == .completed, "connection lost: \(record.reason)")
            let wifi = IPAddress(parsing: "10.1.1.1")!
            // Found by its stalled data when wifi carried some at the cut, otherwise by a new
            // subflow (a join, or a health check's first subflow) left unanswered.
            guard case .failed(let address, _, _)? = verdicts.first else {
                Issue.record("the black hole was not detected: \(verdicts)")
                return
            }
            #expect(address == wifi)
            #expect(verdicts.contains { if case .readmit(wifi, _) = $0 { return true }; return false }, "\(verdicts)")
            let journal = manager.journal.all.map(\.command)
            let deleted = journal.firstIndex { if case .deleteEndpoint(let e) = $0 { return e.address == wifi }; return false }
            let readded = journal.lastIndex { if case .addEndpoint(let e) = $0 { return e.address == wifi }; return false }
            #expect(deleted != nil && readded != nil && deleted! < readded!, "journal: \(journal)")
            #expect(wifiSubflowsAfterReturn.value >= 1, "no wifi subflow on the running connection after wifi recovered")
        }
    }

    @Test("while the gateway's connections are idle their subflows are not sampled (the server health checks do not count); a transfer has them sampled again")
    func idleConnectionsAreNotSampled() throws {
        try withChain(pathManager: allActiveConfiguration()) { chain in
            let manager = try #require(chain.pathManager)
            let address = chain.forwardAddress
            // Three connections the LAN host opens and then leaves idle.
            let held = try OSThread.run(in: chain.testbed.namespace(.lan)) {
                try (0..<3).map { _ in try BlockingSocket.connect(to: address, timeoutSeconds: 10) }
            }
            defer { held.forEach { close($0) } }
            // Their joins made on every path, and a sample taken of them.
            for _ in 0..<50 where establishedSubflows(chain.testbed, from: "10.1.3.1") < 3 { usleep(100_000) }
            usleep(1_500_000)
            func samples() -> (taken: Int, skipped: Int) {
                (manager.sampleDumps.load(ordering: .relaxed) + manager.sampleLookups.load(ordering: .relaxed),
                 manager.sampleSkips.load(ordering: .relaxed))
            }
            let before = samples()
            usleep(3_000_000)
            let quiet = samples()
            print("idle for 3 s: \(quiet.taken - before.taken) samples taken, \(quiet.skipped - before.skipped) skipped; subflows from cell \(establishedSubflows(chain.testbed, from: "10.1.3.1"))")
            // At the steady 500 ms: about six turns, all skipped; the 2 s dump is skipped too.
            #expect(quiet.skipped - before.skipped >= 4)
            #expect(quiet.taken - before.taken == 0, "samples were taken of idle connections")
            _ = try chain.transfer(upload: 4 << 20, download: 4 << 20, seed: 5, timeoutSeconds: 30)
            let busy = samples()
            print("after a transfer: \(busy.taken - quiet.taken) samples taken")
            #expect(busy.taken > quiet.taken, "the transfer's subflows were not sampled")
        }
    }

    @Test("the uplink that carries the route to the server black-holes on an idle gateway: new connections and the health checks start from a healthy path within seconds; after the recovery, routing decides again")
    func newConnectionsAvoidABlackHoledRoute() throws {
        try withChain(pathManager: allActiveConfiguration()) { chain in
            let testbed = chain.testbed
            // The main table sends everything for the server over wifi (testbed.sh).
            _ = try chain.transfer(upload: 1 << 20, download: 1 << 20, seed: 31, timeoutSeconds: 10)
            try testbed.impair("wifi", .blackhole(true))
            let cut = monotonicMilliseconds()
            var firstSuccess: UInt64?
            var failures = 0
            while firstSuccess == nil && monotonicMilliseconds() - cut < 15_000 {
                do {
                    _ = try chain.transfer(upload: 256 << 10, download: 256 << 10, seed: 32, timeoutSeconds: 3)
                    firstSuccess = monotonicMilliseconds() - cut
                } catch let error as TrafficError where error.isCorruption {
                    throw error  // a connection may time out here; it may not deliver wrong bytes
                } catch let error as KernelMappingCorruption {
                    throw error
                } catch {
                    failures += 1
                    usleep(250_000)
                }
            }
            let manager = try #require(chain.pathManager)
            print("black-holed route to the server: first new connection through after \(firstSuccess.map { "\($0) ms" } ?? "never"), \(failures) failed before; verdicts \(manager.verdicts.withLock { $0 })")
            #expect(firstSuccess != nil && firstSuccess! <= 10_000, "new connections did not get through")
            let servers = try #require(chain.client.serverEndpoints)
            let server = try SocketAddress(parsing: "10.9.9.9:4443")
            let source = servers.upstreamSource(for: server)
            #expect(source != nil && source != IPAddress(parsing: "10.1.1.1"), "source \(String(describing: source))")
            // Every one of the next five gets through at once, every byte checked.
            for seed in 33..<38 { _ = try chain.transfer(upload: 256 << 10, download: 256 << 10, seed: UInt64(seed), timeoutSeconds: 5) }

            // wifi recovers: once a subflow on it is seen to work, routing chooses again.
            try testbed.impair("wifi", .blackhole(false))
            var released = false
            for attempt in 0..<40 where !released {
                // Traffic gives the re-admitted wifi its chance to prove itself (a join).
                _ = try? chain.transfer(upload: 256 << 10, download: 256 << 10, seed: UInt64(40 + attempt), timeoutSeconds: 5)
                released = servers.upstreamSource(for: server) == nil
                if !released { usleep(250_000) }
            }
            #expect(released, "connections still start from \(String(describing: servers.upstreamSource(for: server))) after wifi recovered")
        }
    }
}
