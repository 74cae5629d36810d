@testable import ConvertProtocol
import Testing

@Suite("Convert codec")
struct ConvertCodecTests {
    let destination = ConvertDestination(ipv4: (10, 20, 0, 2), port: 9000)

    @Test("encodes the fixed header and a Connect TLV byte for byte")
    func connectBytes() throws {
        let bytes = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        #expect(bytes == [
            0x01, 0x06, 0x22, 0x63,              // version 1, 6 words, magic
            0x0a, 0x05, 0x23, 0x28,              // Connect, 5 words, port 9000
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 20, 0, 2,  // ::ffff:10.20.0.2
        ])
    }

    @Test("round-trips every TLV type")
    func roundTrip() throws {
        let v6 = ConvertDestination(address16: [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1], port: 443)
        let messages: [ConvertMessage] = [
            ConvertMessage([.info]),
            ConvertMessage([.connect(v6, tcpOptions: [1, 1, 2, 4, 5, 0xb4])]),
            ConvertMessage([.extendedTCPHeader([2, 4, 5, 0xb4])]),
            ConvertMessage([.supportedTCPExtensions([2, 30])]),
            ConvertMessage([.cookie([1, 2, 3, 4, 5, 6, 7, 8])]),  // opaque: keeps any padding, so 8 bytes
            ConvertMessage([.error(.destinationUnreachable, value: 3)]),
            ConvertMessage.success,
        ]
        for message in messages {
            let decoded = try ConvertMessage.decode(try message.encoded())
            #expect(decoded.message == message)
        }
        #expect(v6.description == "[2001:db8:0:0:0:0:0:1]:443")
    }

    @Test("rejects malformed input with the right error code", arguments: [
        ([0x01, 0x01, 0x22], ConvertErrorCode.malformedMessage, "truncated fixed header"),
        ([0x02, 0x01, 0x22, 0x63], .unsupportedVersion, "version 2"),
        ([0x01, 0x01, 0x22, 0x64], .malformedMessage, "magic 0x2264"),
        ([0x01, 0x00, 0x22, 0x63], .malformedMessage, "total length 0"),
        ([0x01, 0x02, 0x22, 0x63], .malformedMessage, "says 8 bytes, got 4"),
        ([0x01, 0x02, 0x22, 0x63, 0x01, 0x00, 0, 0], .malformedMessage, "has length 0"),
        ([0x01, 0x02, 0x22, 0x63, 0x0a, 0x05, 0, 0], .malformedMessage, "runs 16 bytes past"),
        ([0x01, 0x02, 0x22, 0x63, 0x0a, 0x01, 0, 0], .malformedMessage, "minimum is 5"),
        ([0x01, 0x02, 0x22, 0x63, 0x63, 0x01, 0, 0], .unsupportedMessage, "unknown TLV type 99"),
        ([0x01, 0x03, 0x22, 0x63, 0x01, 0x01, 0, 0, 0x01, 0x01, 0, 0], .malformedMessage, "duplicate info TLV"),
        ([0x01, 0x02, 0x22, 0x63, 0x01, 0x02, 0, 0], .malformedMessage, "runs 4 bytes past"),
        ([0x01, 0x02, 0x22, 0x63, 0x1e, 0x01, 0x05, 0], .malformedMessage, "unknown error code 5"),
    ] as [([UInt8], ConvertErrorCode, String)])
    func malformed(bytes: [UInt8], code: ConvertErrorCode, reason: String) {
        #expect {
            _ = try ConvertMessage.decode(bytes)
        } throws: { error in
            guard let error = error as? ConvertProtocolError else { return false }
            return error.code == code && error.reason.contains(reason)
        }
    }

    @Test("a request needs a Connect TLV and no TCP options it cannot apply")
    func requestValidation() throws {
        #expect(throws: ConvertProtocolError.self) { try ConvertRequest(ConvertMessage([.info])) }
        #expect {
            try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [2, 4, 5, 0xb4])]))
        } throws: { ($0 as? ConvertProtocolError)?.code == .unsupportedTCPOption }
        #expect(try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [1, 1])])).destination == destination)
        #expect {
            try ConvertRequest(ConvertMessage([.connect(ConvertDestination(ipv4: (1, 2, 3, 4), port: 0), tcpOptions: [])]))
        } throws: { ($0 as? ConvertProtocolError)?.reason.contains("port is 0") == true }
    }

    @Test("the frame reader asks for exactly the bytes of one message")
    func frameReader() throws {
        let message = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        var reader = ConvertFrameReader()
        #expect(reader.bytesNeeded == 4)
        #expect(try reader.consume(message[0..<2]) == nil)
        #expect(reader.bytesNeeded == 2)
        #expect(try reader.consume(message[2..<4]) == nil)
        #expect(reader.bytesNeeded == 20)
        #expect(try reader.consume(message[4...]) == message)
    }
}

@Suite("Convert cookie")
struct ConvertCookieTests {
    let key = ClientKey(id: "gw-1", secret: Array(1...32))
    let destination = ConvertDestination(ipv4: (198, 51, 100, 2), port: 80)

    func authenticator(window: UInt64 = 60, capacity: Int = 1024) -> ConvertAuthenticator {
        ConvertAuthenticator(keys: [key], replayCache: ReplayCache(capacity: capacity, window: window))
    }

    func check(_ raw: [UInt8], with auth: ConvertAuthenticator, now: UInt64) throws -> String? {
        try auth.authenticate(ConvertMessage.decode(raw), now: now)
    }

    @Test("a signed request authenticates once; its replay is refused")
    func signAndReplay() throws {
        let auth = authenticator()
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 1_000_000)
        #expect(try check(raw, with: auth, now: 1_000_010) == "gw-1")
        #expect {
            _ = try check(raw, with: auth, now: 1_000_011)
        } throws: { ($0 as? ConvertProtocolError)?.reason.contains("replay") == true }
    }

    @Test("the MAC binds the destination: changing one byte anywhere is refused")
    func tamperAnywhere() throws {
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 500)
        for index in 4..<raw.count {
            var tampered = raw
            tampered[index] ^= 0x01
            let auth = authenticator()
            do {
                _ = try check(tampered, with: auth, now: 500)
                Issue.record("byte \(index) flipped and still accepted")
            } catch {
                let code = (error as? ConvertProtocolError)?.code
                #expect(code.map { [.notAuthorized, .malformedMessage, .unsupportedTCPOption, .unsupportedMessage].contains($0) } == true, "byte \(index): \(error)")
            }
        }
    }

    @Test("stale and future timestamps, unknown keys and missing cookies are refused")
    func refusals() throws {
        let auth = authenticator(window: 60)
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_000)
        #expect { _ = try check(raw, with: auth, now: 10_061) } throws: { ($0 as? ConvertProtocolError)?.reason.contains("outside ±60 s") == true }
        #expect { _ = try check(raw, with: auth, now: 9_939) } throws: { ($0 as? ConvertProtocolError)?.code == .notAuthorized }
        let stranger = ClientKey(id: "other", secret: Array(1...32))
        let foreign = try ConvertMessage.signedRequest(to: destination, key: stranger, timestamp: 10_000)
        #expect { _ = try check(foreign, with: auth, now: 10_000) } throws: { ($0 as? ConvertProtocolError)?.reason.contains("unknown key id") == true }
        let bare = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        #expect { _ = try check(bare, with: auth, now: 10_000) } throws: { ($0 as? ConvertProtocolError)?.code == .missingCookie }
        let open = ConvertAuthenticator(keys: [], requireCookie: false)
        #expect(try open.authenticate(ConvertMessage.decode(bare), now: 0) == nil)
    }

    @Test("the replay cache stays bounded and never lets an evicted nonce back in")
    func replayCacheBound() throws {
        let cache = ReplayCache(capacity: 4, window: 60)
        for i in 0..<4 { #expect(cache.admit(nonce: [UInt8(i)], timestamp: 100 + UInt64(i), now: 110) == .fresh) }
        #expect(cache.admit(nonce: [9], timestamp: 110, now: 110) == .fresh)  // evicts nonce 0 (ts 100)
        #expect(cache.count == 4)
        #expect(cache.admit(nonce: [0], timestamp: 100, now: 110) == .belowFloor)
        #expect(cache.admit(nonce: [9], timestamp: 110, now: 110) == .replayed)
        // Entries age out with the window: at 200 everything stamped before 140 is gone.
        #expect(cache.admit(nonce: [7], timestamp: 200, now: 200) == .fresh)
        #expect(cache.count == 1)
    }
}
