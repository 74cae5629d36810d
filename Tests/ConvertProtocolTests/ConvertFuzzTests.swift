import ConvertProtocol
import Testing

/// Feeds the decoder and the authenticator thousands of random and mutated messages. Nothing
/// may crash or hang; every rejection must carry a code and a reason; everything accepted must
/// re-encode to a message that decodes to the same thing.
@Suite("Convert fuzz")
struct ConvertFuzzTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("20,000 random and mutated messages")
    func fuzz() throws {
        var rng = SplitMix(state: 0x5eed)
        let key = ClientKey(id: "fuzz", secret: Array(repeating: 3, count: 32))
        let auth = ConvertAuthenticator(keys: [key], replayCache: ReplayCache(capacity: 64, window: 60))
        let seeds: [[UInt8]] = [
            try ConvertMessage.signedRequest(to: ConvertDestination(ipv4: (1, 2, 3, 4), port: 80), key: key, timestamp: 1000),
            try ConvertMessage([.info, .connect(ConvertDestination(ipv4: (5, 6, 7, 8), port: 443), tcpOptions: [1])]).encoded(),
            try ConvertMessage.failure(.notAuthorized).encoded(),
            try ConvertMessage.success.encoded(),
        ]
        var accepted = 0
        var rejected = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if bytes.count >= 4 && round % 8 == 0 {
                    // Mostly-valid header so the TLV walk gets exercised too.
                    bytes[0] = 1; bytes[2] = 0x22; bytes[3] = 0x63
                    bytes[1] = UInt8(truncatingIfNeeded: (bytes.count + 3) / 4)
                }
            } else {
                bytes = seeds[round % seeds.count]
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    switch Int.random(in: 0...3, using: &rng) {
                    case 0 where !bytes.isEmpty:
                        bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                    case 1 where !bytes.isEmpty:
                        bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
                    case 2:
                        bytes.append(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
                    default:
                        if bytes.count > 5 { bytes[1] = UInt8.random(in: 0...255, using: &rng) }
                    }
                }
            }
            // The frame reader must never ask for a negative or absurd amount.
            var reader = ConvertFrameReader()
            if let framed = try? reader.consume(bytes) {
                #expect(framed.count <= ConvertWire.maximumMessageLength)
            } else {
                #expect(reader.bytesNeeded >= 0 && reader.bytesNeeded <= ConvertWire.maximumMessageLength)
            }
            switch Result(catching: { () throws(ConvertProtocolError) in try ConvertMessage.decode(bytes) }) {
            case .success(let decoded):
                accepted += 1
                let reencoded = try decoded.message.encoded()
                #expect(try ConvertMessage.decode(reencoded).message == decoded.message)
                _ = try? auth.authenticate(decoded, now: 1000)
                _ = try? ConvertRequest(decoded.message)
            case .failure(let error):
                rejected += 1
                #expect(!error.reason.isEmpty)
            }
        }
        #expect(accepted > 100 && rejected > 10_000, "accepted \(accepted), rejected \(rejected)")
    }
}
