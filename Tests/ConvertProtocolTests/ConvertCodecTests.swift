@testable import ConvertProtocol
import NetworkTypes
import Testing

@Suite("Convert codec")
struct ConvertCodecTests {
    let destination = SocketAddress(.v4([10, 20, 0, 2]), port: 9000)

    @Test("encodes the fixed header and a Connect TLV byte for byte")
    func connectBytes() throws {
        let bytes = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        #expect(bytes == [
            0x01, 0x06, 0x22, 0x63,              // version 1, 6 words, magic
            0x0a, 0x05, 0x23, 0x28,              // Connect, 5 words, port 9000
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 20, 0, 2,  // ::ffff:10.20.0.2
        ])
    }

    @Test("round-trips every TLV type, IPv4-mapped addresses decode as IPv4")
    func roundTrip() throws {
        let v6 = SocketAddress(IPAddress(parsing: "2001:db8::1")!, port: 443)
        let messages: [ConvertMessage] = [
            ConvertMessage([.info]),
            ConvertMessage([.connect(v6, tcpOptions: [1, 1, 2, 4, 5, 0xb4])]),
            ConvertMessage([.connect(destination, tcpOptions: [])]),
            ConvertMessage([.extendedTCPHeader([2, 4, 5, 0xb4])]),
            ConvertMessage([.supportedTCPExtensions([2, 30])]),
            ConvertMessage([.cookie([1, 2, 3, 4, 5, 6, 7, 8])]),  // opaque: keeps any padding, so 8 bytes
            ConvertMessage([.error(.destinationUnreachable, value: [3])]),
            ConvertMessage([.destinationName("origin.example", port: 443), .originalSource(SocketAddress(.v4([10, 10, 0, 2]), port: 51000))]),
            ConvertMessage.success(),
            ConvertMessage.success(info: true),
            ConvertMessage.info,
        ]
        for message in messages {
            let decoded = try ConvertMessage.decode(try message.encoded())
            #expect(decoded.message == message)
        }
        #expect(Destination.address(v6).description == "[2001:db8::1]:443")
        let mapped = try ConvertMessage.decode(try ConvertMessage([.connect(SocketAddress(.v6(AddressBytes(IPAddress.v4([1, 2, 3, 4]).wire16)), port: 80), tcpOptions: [])]).encoded())
        #expect(mapped.message.connect?.0.description == "1.2.3.4:80")
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
        ([0x01, 0x02, 0x22, 0x63, 0xc0, 0x01, 0, 80], .malformedMessage, "has no name length"),
        ([0x01, 0x03, 0x22, 0x63, 0xc0, 0x02, 0, 80, 9, 0x61, 0x62, 0], .malformedMessage, "says 9 name bytes"),
        ([0x01, 0x03, 0x22, 0x63, 0xc0, 0x02, 0, 80, 2, 0x61, 0x0a, 0], .malformedMessage, "is not a host name"),
        ([0x01, 0x03, 0x22, 0x63, 0xc1, 0x02, 0, 80, 0, 0, 0, 0], .malformedMessage, "Original Source TLV is 2 words"),
    ] as [([UInt8], ConvertErrorCode, String)])
    func malformed(bytes: [UInt8], code: ConvertErrorCode, reason: String) {
        #expect {
            _ = try ConvertMessage.decode(bytes)
        } throws: { error in
            guard let error = error as? ConvertProtocolError else { return false }
            return error.code == code && error.reason.contains(reason)
        }
    }

    @Test("an unknown error code in a reply still decodes (the client resets either way)")
    func unknownErrorCode() throws {
        let decoded = try ConvertMessage.decode([0x01, 0x02, 0x22, 0x63, 0x1e, 0x01, 0xee, 0])
        #expect(decoded.message.error?.0 == ConvertErrorCode(rawValue: 0xee))
        #expect(ConvertReply(decoded.message) == .refused(ConvertErrorCode(rawValue: 0xee), value: [0]))
    }

    @Test("requests: a destination or Info; TCP options as RFC 8803 §6 says")
    func requestValidation() throws {
        #expect(try ConvertRequest(ConvertMessage([.info])) == ConvertRequest(destination: nil, wantsInfo: true))
        #expect { try ConvertRequest(ConvertMessage([])) } throws: { ($0 as? ConvertProtocolError)?.code == .malformedMessage }
        // SACK-permitted (4) and timestamps (8) cannot be set from user space: the kinds come back.
        #expect {
            try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0])]))
        } throws: { error in
            guard let error = error as? ConvertProtocolError else { return false }
            return error.code == .unsupportedTCPOption && error.value == [4, 8]
        }
        // MSS, window scale and SACK are ignored; NOP padding too; MPTCP (30) asks for MPTCP.
        let ignored = try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [1, 1, 2, 4, 5, 0xb4, 3, 3, 7, 30, 2])]))
        #expect(ignored.destination == .address(destination) && ignored.wantsMPTCP)
        #expect { try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [2, 9, 1])])) } throws: {
            ($0 as? ConvertProtocolError)?.reason.contains("has length 9") == true
        }
        #expect { try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: [0, 7])])) } throws: {
            ($0 as? ConvertProtocolError)?.reason.contains("after End of Option List") == true
        }
        #expect {
            try ConvertRequest(ConvertMessage([.connect(SocketAddress(.v4([1, 2, 3, 4]), port: 0), tcpOptions: [])]))
        } throws: { ($0 as? ConvertProtocolError)?.reason.contains("port is 0") == true }
        #expect {
            try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: []), .destinationName("a.example", port: 1)]))
        } throws: { ($0 as? ConvertProtocolError)?.reason.contains("both") == true }
        let named = try ConvertRequest(ConvertMessage([.destinationName("origin.example", port: 8080), .originalSource(destination)]))
        #expect(named.destination == .name("origin.example", port: 8080) && named.originalSource == destination)
        #expect { try ConvertRequest(ConvertMessage([.connect(destination, tcpOptions: []), .supportedTCPExtensions([30])])) } throws: {
            ($0 as? ConvertProtocolError)?.code == .unsupportedMessage
        }
    }

    @Test("error replies: Malformed and Unsupported Message echo the request shifted by one byte; all fit 1020 bytes")
    func errorReplies() throws {
        let received: [UInt8] = [0x01, 0x02, 0x22, 0x63, 0x63, 0x01, 0, 0]
        let reply = try ConvertMessage.failure(for: ConvertProtocolError(.unsupportedMessage, "x"), received: received).encoded()
        #expect(reply == [0x01, 0x04, 0x22, 0x63, 0x1e, 0x03, 0x02, 0x00] + received)
        let huge = [UInt8](repeating: 0xab, count: 1020)
        let long = try ConvertMessage.failure(for: ConvertProtocolError(.malformedMessage, "x"), received: huge).encoded()
        #expect(long.count == 1020)
        #expect(try ConvertMessage.decode(long).message.error?.0 == .malformedMessage)
        let version = try ConvertMessage.failure(for: ConvertProtocolError(.unsupportedVersion, "x", value: [1]), received: [2]).encoded()
        #expect(version == [0x01, 0x02, 0x22, 0x63, 0x1e, 0x01, 0x00, 0x01])
        let notAuthorized = try ConvertMessage.failure(for: ConvertProtocolError(.notAuthorized, "x"), received: received).encoded()
        #expect(notAuthorized == [0x01, 0x02, 0x22, 0x63, 0x1e, 0x01, 0x20, 0x00])
    }

    @Test("the frame reader asks for exactly the bytes of one message")
    func frameReader() throws {
        let message = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        var reader = ConvertFrameReader()
        #expect(reader.bytesNeeded == 4)
        #expect(try reader.consume(Array(message[0..<2])) == nil)
        #expect(reader.bytesNeeded == 2)
        #expect(try reader.consume(Array(message[2..<4])) == nil)
        #expect(reader.bytesNeeded == 20)
        #expect(try reader.consume(Array(message[4...])) == message)
    }
}

@Suite("Convert cookie and replay cache")
struct ConvertCookieTests {
    let key = ClientKey(id: "gw-1", secret: Array(1...32))
    let destination = SocketAddress(.v4([198, 51, 100, 2]), port: 80)

    func authenticator(past: UInt64 = 60, future: UInt64 = 5, floor: UInt64 = 0, keys: [ClientKey]? = nil,
                       capacity: Int = 1 << 17, share: Int = 1024) -> ConvertAuthenticator {
        var settings = ConvertAuthenticator.Settings()
        settings.freshness = Freshness(pastSeconds: past, futureSeconds: future)
        settings.replayCapacity = capacity
        settings.minimumShare = share
        return ConvertAuthenticator(keys: keys ?? [key], settings: settings, floor: floor)
    }

    func check(_ raw: [UInt8], with auth: ConvertAuthenticator, now: UInt64, monotonic: UInt64 = 1) throws -> String? {
        try auth.authenticate(ConvertMessage.decode(raw), wallNow: now, monotonicNow: monotonic)
    }

    func reason(_ body: () throws -> Any?) -> String {
        do { _ = try body(); return "accepted" } catch { return (error as? ConvertProtocolError).map { "\($0.code.rawValue) \($0.reason)" } ?? "\(error)" }
    }

    @Test("a signed request authenticates once; its replay is refused")
    func signAndReplay() throws {
        let auth = authenticator()
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 1_000_000_000)
        #expect(try check(raw, with: auth, now: 1_000_010_000) == "gw-1")
        #expect(reason { try check(raw, with: auth, now: 1_000_011_000) }.contains("replay"))
    }

    @Test("the MAC binds the destination: changing one byte anywhere is refused")
    func tamperAnywhere() throws {
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 500_000)
        for index in 4..<raw.count {
            var tampered = raw
            tampered[index] ^= 0x01
            let auth = authenticator()
            do {
                _ = try check(tampered, with: auth, now: 500_000)
                Issue.record("byte \(index) flipped and still accepted")
            } catch {
                let code = (error as? ConvertProtocolError)?.code
                #expect(code.map { [.notAuthorized, .malformedMessage, .unsupportedTCPOption, .unsupportedMessage].contains($0) } == true, "byte \(index): \(error)")
            }
        }
    }

    @Test("timestamps at every extreme are refused with Not Authorized, never a trap", arguments: [
        UInt64(0), 1, 9_939_999, 10_005_001, 1 << 32, 1 << 63, (1 << 63) + 1, UInt64.max - 60, UInt64.max - 5, UInt64.max - 1, UInt64.max,
    ])
    func extremeTimestamps(timestamp: UInt64) throws {
        let auth = authenticator()
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: timestamp)
        let outcome = reason { try check(raw, with: auth, now: 10_000_000) }
        #expect(outcome.hasPrefix("32 ") && outcome.contains("outside -60/+5 s"), "\(timestamp): \(outcome)")
        // And at a server clock near the end of time.
        let late = reason { try check(raw, with: auth, now: UInt64.max - 3) }
        #expect(late.hasPrefix("32 ") || late == "accepted", "\(timestamp) at the end of time: \(late)")
    }

    @Test("the freshness window: 60 s behind and 5 s ahead pass, one more second does not")
    func freshnessEdges() throws {
        for (timestamp, accepted) in [(UInt64(9_940_000), true), (9_939_999, false), (10_005_000, true), (10_005_001, false)] {
            let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: timestamp)
            #expect((reason { try check(raw, with: authenticator(), now: 10_000_000) } == "accepted") == accepted, "\(timestamp)")
        }
    }

    @Test("unknown keys, missing and malformed cookies: Missing Cookie or Not Authorized (RFC 8803 §5.2.6), key ids escaped")
    func refusals() throws {
        let auth = authenticator()
        let stranger = ClientKey(id: "other\u{1b}[31m\nx", secret: Array(1...32))
        let foreign = try ConvertMessage.signedRequest(to: destination, key: stranger, timestamp: 10_000_000)
        let unknown = reason { try check(foreign, with: auth, now: 10_000_000) }
        #expect(unknown.hasPrefix("32 unknown key id \"other\\x1b[31m\\x0ax\""), "\(unknown)")
        let bare = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        #expect(reason { try check(bare, with: auth, now: 10_000_000) }.hasPrefix("3 "))
        var settings = ConvertAuthenticator.Settings()
        settings.requireCookie = false
        let open = ConvertAuthenticator(keys: [], settings: settings, floor: 0)
        #expect(try open.authenticate(ConvertMessage.decode(bare), wallNow: 0, monotonicNow: 0) == nil)
        // Cookies that are not ours in layout: invalid cookies, so Not Authorized.
        for cookie: [UInt8] in [[1], [2, 1, 0x41], [1, 0], [1, 65] + Array(repeating: 0, count: 130), [1, 4, 0x67, 0x77, 0x2d, 0x31, 0, 0], [1, 1, 0xff] + Array(repeating: 0, count: 56)] {
            let raw = try ConvertMessage([.connect(destination, tcpOptions: []), .cookie(cookie)]).encoded()
            let outcome = reason { try check(raw, with: auth, now: 10_000_000) }
            #expect(outcome.hasPrefix("32 "), "\(cookie.prefix(6)): \(outcome)")
        }
    }

    @Test("eviction takes the lowest timestamp first, so the floor never passes the present")
    func evictionByLowestTimestamp() throws {
        let cache = ReplayCache(capacity: 4, floor: 0)
        let freshness = Freshness()
        func admit(_ n: UInt8, _ ts: UInt64, now: UInt64 = 1_000_000) -> ReplayCache.Verdict {
            cache.admit(nonce: Nonce([UInt8](repeating: n, count: 16))!, timestamp: ts, wallNow: now, monotonicNow: 10_000, freshness: freshness)
        }
        // Arrival order is not timestamp order: 1000 first, then older ones.
        #expect(admit(1, 1_000_000) == .fresh)
        #expect(admit(2, 960_000) == .fresh)
        #expect(admit(3, 980_000) == .fresh)
        #expect(admit(4, 990_000) == .fresh)
        #expect(admit(5, 999_000) == .fresh)       // full: evicts 960 (lowest), not 1000 (first in)
        #expect(cache.floor == 960_000)
        #expect(admit(2, 960_000) == .belowFloor)  // the evicted nonce cannot come back
        #expect(admit(1, 1_000_000) == .replayed)  // the first one is still remembered
        #expect(cache.count == 4)
    }

    @Test("a cookie stamped in the future at the head of the cache does not hold older ones in")
    func futureCookieAtTheHead() throws {
        let auth = authenticator(future: 5, capacity: 8, share: 8)
        let future = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_005_000)
        #expect(try check(future, with: auth, now: 10_000_000, monotonic: 100_000) == "gw-1")
        // Eight honest connections over the next minutes, each with a fresh cookie: none is refused,
        // because entries age out by their own deadline on the monotonic clock, not behind the head.
        for minute in 1...8 {
            let now = 10_000_000 + UInt64(minute) * 70_000
            let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: now)
            #expect(try check(raw, with: auth, now: now, monotonic: 100_000 + UInt64(minute) * 70_000) == "gw-1", "minute \(minute)")
        }
        #expect(auth.replayCache(for: "gw-1")!.count <= 2)
        // The floor trails the present: a cookie stamped one second ago still passes.
        let recent = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_000_000 + 8 * 70_000 - 1_000)
        #expect(try check(recent, with: auth, now: 10_000_000 + 8 * 70_000, monotonic: 100_000 + 8 * 70_000) == "gw-1")
    }

    @Test("a key that floods fills only its own share; an honest key keeps connecting")
    func perKeyShare() throws {
        let thief = ClientKey(id: "stolen", secret: Array(repeating: 7, count: 32))
        let auth = authenticator(keys: [key, thief], capacity: 64, share: 16)
        #expect(auth.replayCache(for: "stolen")!.capacity == 32)
        // The flood: future-stamped cookies, many more than the cache holds.
        for i in 0..<500 {
            let raw = try ConvertMessage.signedRequest(to: destination, key: thief, timestamp: 10_000_000 + UInt64(i % 6) * 1000)
            _ = try? check(raw, with: auth, now: 10_000_000)
        }
        #expect(auth.replayCache(for: "stolen")!.count <= 32)
        #expect(auth.replayCache(for: "stolen")!.floor >= 10_000_000)   // it raised its own floor
        // The honest gateway: four connections a second, each cookie a moment old.
        for i in 0..<40 {
            let now = 10_000_000 + UInt64(i / 4) * 1000
            let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: now - UInt64(i % 2) * 1000)
            #expect(try check(raw, with: auth, now: now) == "gw-1", "honest connection \(i)")
        }
    }

    @Test("after a restart the floor is the start time: a cookie accepted before it is refused")
    func restartFloor() throws {
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_000_000)
        #expect(try check(raw, with: authenticator(floor: 9_990_000), now: 10_001_000) == "gw-1")
        let restarted = authenticator(floor: 10_002_000)
        #expect(reason { try check(raw, with: restarted, now: 10_003_000) }.contains("replay floor"))
        let after = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_003_000)
        #expect(try check(after, with: restarted, now: 10_003_000) == "gw-1")
    }

    @Test("a reload keeps the replay state of keys that stay")
    func reloadKeepsReplayState() throws {
        let first = authenticator()
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_000_000)
        #expect(try check(raw, with: first, now: 10_000_000) == "gw-1")
        let reloaded = ConvertAuthenticator(keys: [key, ClientKey(id: "new", secret: Array(1...16))], settings: first.settings, floor: 0, previous: first)
        #expect(reason { try check(raw, with: reloaded, now: 10_001_000) }.contains("replay"))
        #expect(reloaded.keyIDs == ["gw-1", "new"])
    }

    @Test("ageing runs on the monotonic clock: a wall-clock step back cannot reopen an old cookie")
    func monotonicAgeing() throws {
        let auth = authenticator()
        let raw = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_000_000)
        #expect(try check(raw, with: auth, now: 10_000_000, monotonic: 50_000) == "gw-1")
        // 70 s later (monotonic) the entry has aged out and its timestamp became the floor; then the
        // wall clock is stepped back an hour and the old cookie would look fresh again: refused.
        let other = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 10_070_000)
        #expect(try check(other, with: auth, now: 10_070_000, monotonic: 120_000) == "gw-1")
        #expect(reason { try check(raw, with: auth, now: 10_010_000, monotonic: 121_000) }.contains("replay"))
    }
}
