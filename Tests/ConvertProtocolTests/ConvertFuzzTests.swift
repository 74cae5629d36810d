import ConvertProtocol
import Foundation
import Fuzzing
import NetworkTypes
import TestSupport
import Testing

/// Two fuzzers in the test suite (the coverage-guided one, run for millions of inputs, lives
/// in tools/fuzz): byte mutation of good messages, and the structure-aware generator of
/// well-formed requests with extreme values. Nothing may crash or hang, and every invariant of
/// ConvertFuzzHarness must hold. The corpus committed under tools/fuzz/corpus is replayed too.
@Suite("Convert fuzz")
struct ConvertFuzzTests {
    @Test("20,000 random and mutated messages")
    func mutated() throws {
        var harness = ConvertFuzzHarness()
        var rng = SeededChoices(seed: 0x5eed)
        let seeds: [[UInt8]] = [
            try ConvertMessage.signedRequest(to: SocketAddress(.v4([1, 2, 3, 4]), port: 80), key: harness.key, timestamp: harness.now),
            try ConvertMessage.signedRequest([.destinationName("origin.example", port: 443), .originalSource(SocketAddress(.v4([10, 0, 0, 2]), port: 4000)), .info],
                                             key: harness.key, timestamp: harness.now),
            try ConvertMessage([.info, .connect(SocketAddress(.v4([5, 6, 7, 8]), port: 443), tcpOptions: [1])]).encoded(),
            try ConvertMessage.failure(.notAuthorized).encoded(),
            try ConvertMessage.success(info: true).encoded(),
        ]
        var rejected = 0
        var accepted = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = rng.bytes(rng.below(65))
                if bytes.count >= 4 && round % 8 == 0 {
                    bytes[0] = 1; bytes[2] = 0x22; bytes[3] = 0x63
                    bytes[1] = UInt8(truncatingIfNeeded: (bytes.count + 3) / 4)
                }
            } else {
                bytes = seeds[round % seeds.count]
                for _ in 0..<(1 + rng.below(4)) {
                    switch rng.below(4) {
                    case 0 where !bytes.isEmpty: bytes[rng.below(bytes.count)] = rng.byte()
                    case 1 where !bytes.isEmpty: bytes.removeLast(1 + rng.below(bytes.count))
                    case 2: bytes += rng.bytes(1 + rng.below(8))
                    default: if bytes.count > 5 { bytes[1] = rng.byte() }
                    }
                }
            }
            let (outcome, violations) = harness.run(bytes)
            #expect(violations.isEmpty, "input \(bytes): \(violations)")
            if case .accepted = outcome { accepted += 1 } else { rejected += 1 }
        }
        #expect(rejected > 10_000 && accepted >= 1, "rejected \(rejected), accepted \(accepted)")
    }

    @Test("50,000 structure-aware requests with extreme field values")
    func structured() throws {
        var harness = ConvertFuzzHarness()
        let generator = ConvertRequestGenerator(key: harness.key, now: harness.now)
        var rng = SeededChoices(seed: 0xc0ffee)
        var codes: [UInt8: Int] = [:]
        var accepted = 0
        for _ in 0..<50_000 {
            let bytes = generator.make(&rng)
            let (outcome, violations) = harness.run(bytes)
            #expect(violations.isEmpty, "input \(bytes): \(violations)")
            switch outcome {
            case .rejected(let code): codes[code.rawValue, default: 0] += 1
            case .accepted: accepted += 1
            case .incomplete: break
            }
        }
        // The generator must reach deep: signed requests accepted, and every layer's refusals.
        #expect(accepted > 500, "accepted \(accepted)")
        for code in [ConvertErrorCode.unsupportedVersion, .malformedMessage, .unsupportedMessage, .missingCookie, .notAuthorized, .unsupportedTCPOption] {
            #expect((codes[code.rawValue] ?? 0) > 20, "\(code): \(codes[code.rawValue] ?? 0) of \(codes)")
        }
    }
}

@Suite("Coverage-guided corpus")
struct FuzzCorpusTests {
    /// Every input libFuzzer kept (tools/fuzz/corpus/convert), through the same entry point it
    /// ran: a crash or broken invariant found once stays fixed.
    @Test("the committed Convert corpus replays with every invariant holding")
    func replayConvertCorpus() throws {
        let directory = Testbed.repositoryRoot + "/tools/fuzz/corpus/convert"
        let files = try #require(try? FileManager.default.contentsOfDirectory(atPath: directory))
        #expect(files.count >= 6)
        var harness = ConvertFuzzHarness()
        for file in files {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)))
            let violations = FuzzTargets.convert(bytes, harness: &harness)
            #expect(violations.isEmpty, "\(file): \(violations)")
        }
    }
}
