import ConvertProtocol
import DataPlane
import Glibc
import Testing

@Suite("Server against bad input (loopback)", .serialized)
struct ServerBadInputTests {
    @Test("wrong version, bad magic, unknown TLV, duplicate TLV, bad length: the right Error TLV each")
    func malformedRequests() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        let connect = try ConvertMessage([.connect(h.destination(port: h.originAddress.port), tcpOptions: [])]).encoded()
        var unknown = connect
        unknown[4] = 99
        var duplicated = connect + connect[4...]
        duplicated[1] = UInt8(duplicated.count / 4)
        var badLength = connect
        badLength[5] = 9
        let cases: [([UInt8], ConvertErrorCode)] = [
            ([2, 1, 0x22, 0x63], .unsupportedVersion),
            ([1, 1, 0x12, 0x34], .malformedMessage),
            (unknown, .unsupportedMessage),
            (duplicated, .malformedMessage),
            (badLength, .malformedMessage),
            (connect, .missingCookie),
        ]
        for (bytes, code) in cases {
            let (reply, _) = try h.exchange(bytes)
            #expect(h.errorCode(in: reply) == code, "sent \(bytes.prefix(8)): got \(reply)")
        }
    }

    @Test("a replayed request is refused; a bad cookie is refused; nothing reaches the origin")
    func replayAndBadCookie() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        let request = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
        let first = try h.exchange(request, halfClose: true)
        #expect(first.reply == (try ConvertMessage.success().encoded()), "\(first.reply) \(h.records.reasons)")
        let replay = try h.exchange(request)
        #expect(h.errorCode(in: replay.reply) == .notAuthorized)
        let wrong = ClientKey(id: "gw", secret: Array(repeating: 6, count: 32))
        let forged = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: wrong, timestamp: unixMilliseconds())
        #expect(h.errorCode(in: try h.exchange(forged).reply) == .notAuthorized)
        let stale = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds() - 3_600_000)
        #expect(h.errorCode(in: try h.exchange(stale).reply) == .notAuthorized)
        // Only the one authenticated request was connected to the origin.
        var pending = pollfd(fd: h.origin, events: Int16(POLLIN), revents: 0)
        var accepted = 0
        while poll(&pending, 1, 100) > 0 {
            let fd = accept(h.origin, nil, nil)
            if fd >= 0 { accepted += 1; close(fd) }
        }
        #expect(accepted == 1)
    }

    @Test("cookies stamped at the extremes of time (the remote kill of 2^64 - 5) get Not Authorized and the server keeps serving")
    func extremeTimestamps() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        for timestamp: UInt64 in [UInt64.max - 5, UInt64.max, 1 << 63, 0, unixMilliseconds() + 3_600_000] {
            // Signed with the right key (so the MAC is not what stops it), and unsigned.
            let signed = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: timestamp)
            #expect(h.errorCode(in: try h.exchange(signed).reply) == .notAuthorized, "signed, timestamp \(timestamp)")
            let cookie = ConvertCookie(keyID: h.key.id, timestamp: timestamp, nonce: Array(repeating: 1, count: 16)).encoded()
            let unsigned = try ConvertMessage([.connect(h.destination(port: h.originAddress.port), tcpOptions: []), .cookie(cookie)]).encoded()
            #expect(h.errorCode(in: try h.exchange(unsigned).reply) == .notAuthorized, "unsigned, timestamp \(timestamp)")
        }
        // Still alive and serving.
        let good = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
        #expect(try h.exchange(good, halfClose: true).reply == (try ConvertMessage.success().encoded()))
    }

    @Test("truncated request then EOF: closed without relaying")
    func truncated() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        let request = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
        let result = try h.exchange(Array(request.prefix(10)), halfClose: true)
        #expect(result.reply.isEmpty)
        #expect(result.closedAfter < 400)
    }

    @Test("slowloris: a request trickled slower than the deadline is cut off at the deadline")
    func slowloris() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        let request = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        #expect(h.address.withSockAddr { connect(fd, $0, $1) } == 0)
        let start = monotonicMilliseconds()
        var closedAt: UInt64?
        for byte in request {
            var b = byte
            if send(fd, &b, 1, Int32(MSG_NOSIGNAL)) < 0 { closedAt = monotonicMilliseconds(); break }
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&probe, 1, 100) > 0 {
                var sink: UInt8 = 0
                if recv(fd, &sink, 1, Int32(MSG_DONTWAIT)) <= 0 { closedAt = monotonicMilliseconds(); break }
            }
        }
        let elapsed = Double((closedAt ?? monotonicMilliseconds()) - start)
        #expect(closedAt != nil, "the server never closed a trickled request")
        #expect(elapsed >= 350 && elapsed < 1_500, "closed after \(elapsed) ms; the deadline is 400 ms")
        #expect(h.records.waitFor(.handshakeTimeout), "records: \(h.records.reasons)")
    }

    @Test("plain TCP client of the MPTCP listener is served (no MPTCP needed on the client)")
    func plainTCPClientServed() throws {
        let h = try BadInputHarness()
        defer { h.stop() }
        let request = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
        let result = try h.exchange(request, halfClose: true)
        #expect(result.reply == (try ConvertMessage.success().encoded()), "\(result.reply) \(h.records.reasons)")
    }

    /// The driver's deadlines share one timer (ConnectionDeadlines): the handshake's is cleared
    /// when relaying starts and the idle one takes over, re-armed from the last activity.
    @Test("a relayed connection left silent is closed at the idle timeout; one that keeps talking is not")
    func idleTimeout() throws {
        let h = try BadInputHarness(idleTimeout: 1_000)
        defer { h.stop() }
        func relayed() throws -> Int32 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var tv = timeval(tv_sec: 3, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            #expect(h.address.withSockAddr { connect(fd, $0, $1) } == 0)
            let request = try ConvertMessage.signedRequest(to: h.destination(port: h.originAddress.port), key: h.key, timestamp: unixMilliseconds())
            _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            let success = try ConvertMessage.success().encoded()
            var reply = [UInt8](repeating: 0, count: success.count)
            #expect(recv(fd, &reply, reply.count, Int32(MSG_WAITALL)) == success.count && reply == success, "no success reply: \(h.records.reasons)")
            return fd
        }
        let silent = try relayed()
        let talking = try relayed()
        defer { close(silent); close(talking) }
        let start = monotonicMilliseconds()
        var silentClosedAt: UInt64?
        var byte: UInt8 = 0
        // 2.5 s, the talking one sending a byte every 250 ms (the origin's backlog takes them).
        while monotonicMilliseconds() - start < 2_500 {
            #expect(send(talking, &byte, 1, Int32(MSG_NOSIGNAL)) == 1, "the talking connection was closed")
            usleep(250_000)
            if silentClosedAt == nil, recv(silent, &byte, 1, Int32(MSG_DONTWAIT)) == 0 || errno == ECONNRESET {
                silentClosedAt = monotonicMilliseconds()
            }
        }
        let closedAfter = silentClosedAt.map { Double($0 - start) }
        #expect(closedAfter != nil, "the silent connection outlived its 1 s idle timeout by 1.5 s")
        #expect((closedAfter ?? 0) >= 900, "closed after \(closedAfter ?? 0) ms, before its idle timeout")
        #expect(h.records.waitFor(.idleTimeout), "records: \(h.records.reasons)")
        #expect(h.records.reasons.filter { $0 == .idleTimeout }.count == 1, "records: \(h.records.reasons)")
    }
}
