import ConvertProtocol
import DataPlane
import Foundation
import Fuzzing
@testable import Proxy
import ProxyProtocols
import TestSupport
import Testing

/// The SOCKS5 and HTTP CONNECT frontends under generated and mutated input, fed the way the
/// driver feeds them (reads of at most what they ask, peeks of everything queued): every input
/// ends in a connect, a reply or a close within a bounded number of steps, no read asks for
/// nothing, and the coverage-guided corpus of tools/fuzz replays clean.
@Suite("SOCKS5 and HTTP CONNECT fuzz")
struct ProxyFrontendFuzzTests {
    enum Outcome: Equatable { case connected, replied, closed, starved }

    /// Drives `frontend` over `input`; `nil` means an invariant broke.
    static func drive<F: Frontend>(_ frontend: inout F, _ input: [UInt8]) -> Outcome? {
        var offset = 0
        var step = frontend.start()
        for _ in 0..<10_000 {
            switch step {
            case .read(let limit):
                guard limit > 0 else { return nil }
                guard offset < input.count else { step = frontend.inboundClosed(); continue }
                let end = min(input.count, offset + limit)
                let chunk = Array(input[offset..<end])
                offset = end
                step = frontend.received(chunk)
            case .peek(let limit):
                guard limit > 0 else { return nil }
                // All of it queued at once (the driver also re-peeks only on new bytes).
                let queued = Array(input[offset...].prefix(limit))
                guard !queued.isEmpty else { step = frontend.inboundClosed(); continue }
                let next = frontend.received(queued)
                if next == step { return .starved }  // waits for bytes that will never come: the deadline ends it
                step = next
            case .send:
                step = frontend.sent()
            case .connect:
                return .connected
            case .relay:
                return .replied
            case .close(let reason, _):
                if case .internalError = reason { return nil }
                return .closed
            }
        }
        return nil
    }

    @Test("10,000 generated and mutated SOCKS5 and HTTP CONNECT conversations: always an answer, never an impossible state")
    func generatedAndMutated() {
        var rng = SeededChoices(seed: 0x50c55)
        let generator = ProxyRequestGenerator()
        var outcomes: [Outcome: Int] = [:]
        let users = ProxyUsers([(username: "alice", password: "s3cret")])
        for round in 0..<10_000 {
            let http = round % 2 == 1
            var bytes = http ? generator.httpConnect(&rng) : generator.socks5(&rng)
            if round % 3 == 0, !bytes.isEmpty {
                for _ in 0..<(1 + rng.below(4)) { bytes[rng.below(bytes.count)] = rng.byte() }
            }
            let outcome: Outcome?
            if http {
                var frontend = HTTPConnectFrontend(users: round % 4 == 1 ? users : nil, peer: nil)
                outcome = Self.drive(&frontend, bytes)
                #expect(ProxyProtocolFuzzHarness.httpConnect(bytes).isEmpty)
            } else {
                var frontend = SOCKS5Frontend(users: round % 4 == 0 ? users : nil, peer: nil)
                outcome = Self.drive(&frontend, bytes)
                #expect(ProxyProtocolFuzzHarness.socks5(bytes).isEmpty)
            }
            guard let outcome else {
                Issue.record("invariant broken by \(http ? "HTTP" : "SOCKS5") input \(bytes)")
                return
            }
            outcomes[outcome, default: 0] += 1
        }
        // The generator must reach every end, or it is not testing much.
        #expect(outcomes[.connected, default: 0] > 100 && outcomes[.closed, default: 0] > 1_000 && outcomes[.starved, default: 0] > 50, "\(outcomes)")
        print("proxy protocol fuzz: \(outcomes)")
    }

    @Test("the committed libFuzzer corpus of tools/fuzz replays with every invariant holding")
    func corpus() throws {
        let directory = Testbed.repositoryRoot + "/tools/fuzz/corpus/proxy-protocols"
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.count >= 5)
        for name in names {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))
            #expect(FuzzTargets.proxyProtocols(bytes).isEmpty, "\(name)")
        }
    }
}
