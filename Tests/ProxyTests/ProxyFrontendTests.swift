import ConvertProtocol
import DataPlane
@testable import Proxy
@testable import ProxyProtocols
import Testing

/// The SOCKS5 and HTTP CONNECT frontends driven by hand, and their codecs: no sockets.
@Suite("SOCKS5 and HTTP CONNECT frontends")
struct ProxyFrontendTests {
    let peer = SocketAddress(.v4([10, 10, 0, 2]), port: 40000)
    let users = ProxyUsers([(username: "alice", password: "s3cret")])

    /// Feeds `bytes` to a frontend the way the driver does: only as many as each `.read` asks
    /// for; returns the first step that is not a read, and the bytes left unread.
    func feed<F: Frontend>(_ frontend: inout F, _ step: FrontendStep, _ bytes: [UInt8]) -> (FrontendStep, [UInt8]) {
        var step = step
        var rest = bytes[...]
        while case .read(let limit) = step {
            guard !rest.isEmpty else { return (step, []) }
            #expect(limit > 0, "a read of nothing")
            let chunk = rest.prefix(limit)
            rest = rest.dropFirst(chunk.count)
            step = frontend.received(Array(chunk))
        }
        return (step, Array(rest))
    }

    func socksRequest(_ atyp: UInt8, _ address: [UInt8], port: UInt16, command: UInt8 = 1) -> [UInt8] {
        [5, command, 0, atyp] + address + [UInt8(port >> 8), UInt8(port & 0xff)]
    }

    // MARK: SOCKS5

    @Test("SOCKS5 without users: greeting, CONNECT to a name, success, relay; bytes behind the request stay unread")
    func socksHappyPath() {
        var frontend = SOCKS5Frontend(users: nil, peer: peer)
        var (step, rest) = feed(&frontend, frontend.start(), [5, 1, 0])
        #expect(step == .send([5, 0]) && rest.isEmpty)
        step = frontend.sent()
        let name = Array("origin.example".utf8)
        (step, rest) = feed(&frontend, step, socksRequest(3, [UInt8(name.count)] + name, port: 443) + Array("GET /".utf8))
        #expect(step == .connect(ConnectRequest(destination: .name("origin.example", port: 443), originalSource: peer)))
        #expect(rest == Array("GET /".utf8), "the application's first bytes are left for the relay")
        #expect(frontend.upstreamConnected() == .send([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
        #expect(frontend.sent() == .relay)
    }

    @Test("SOCKS5 addresses: IPv4, IPv6 (compressed when printed), an address written as a name, IPv4-mapped IPv6")
    func socksAddresses() throws {
        let cases: [([UInt8], String)] = [
            (socksRequest(1, [10, 20, 0, 2], port: 9000), "10.20.0.2:9000"),
            (socksRequest(4, [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1], port: 80), "[2001:db8::1]:80"),
            (socksRequest(3, [9] + Array("10.20.0.2".utf8), port: 22), "10.20.0.2:22"),
            (socksRequest(4, [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 192, 0, 2, 1], port: 80), "192.0.2.1:80"),
        ]
        for (bytes, expected) in cases {
            let request = try SOCKS5.parseRequest(bytes)
            #expect(request.destination.description == expected)
            if case .name = request.destination { Issue.record("\(expected) must be an address") }
        }
    }

    @Test("SOCKS5 with users: the right password relays, a wrong one gets status 1 and the end, no method offered gets 0xFF")
    func socksAuthentication() {
        func credentials(_ user: String, _ password: String) -> [UInt8] {
            [1, UInt8(user.utf8.count)] + Array(user.utf8) + [UInt8(password.utf8.count)] + Array(password.utf8)
        }
        var good = SOCKS5Frontend(users: users, peer: peer)
        var (step, _) = feed(&good, good.start(), [5, 2, 0, 2])
        #expect(step == .send([5, 2]))
        (step, _) = feed(&good, good.sent(), credentials("alice", "s3cret"))
        #expect(step == .send([1, 0]))
        (step, _) = feed(&good, good.sent(), socksRequest(1, [10, 20, 0, 2], port: 9000))
        guard case .connect = step else { Issue.record("expected connect, got \(step)"); return }

        var wrong = SOCKS5Frontend(users: users, peer: peer)
        (step, _) = feed(&wrong, wrong.start(), [5, 1, 2])
        (step, _) = feed(&wrong, wrong.sent(), credentials("alice", "guess"))
        #expect(step == .send([1, 1]))
        guard case .close(.rejected(let error), .drainInbound) = wrong.sent() else { Issue.record("a wrong password must end the connection"); return }
        #expect(error.code == .notAuthorized && error.reason.contains("alice"))

        var unknown = SOCKS5Frontend(users: users, peer: peer)
        (step, _) = feed(&unknown, unknown.start(), [5, 1, 2])
        (step, _) = feed(&unknown, unknown.sent(), credentials("mallory", "s3cret"))
        #expect(step == .send([1, 1]), "an unknown user is refused like a wrong password")

        var noMethod = SOCKS5Frontend(users: users, peer: peer)
        (step, _) = feed(&noMethod, noMethod.start(), [5, 1, 0])
        #expect(step == .send([5, 0xff]))
        guard case .close(.rejected, .drainInbound) = noMethod.sent() else { Issue.record("no acceptable method must end it"); return }
    }

    @Test("SOCKS5 errors get their reply codes: BIND and UDP ASSOCIATE, address type, bad name; not SOCKS5 at all is a reset")
    func socksErrors() {
        func afterGreeting(_ request: [UInt8]) -> FrontendStep {
            var frontend = SOCKS5Frontend(users: nil, peer: peer)
            _ = feed(&frontend, frontend.start(), [5, 1, 0])
            return feed(&frontend, frontend.sent(), request).0
        }
        #expect(afterGreeting(socksRequest(1, [1, 2, 3, 4], port: 1, command: 2)) == .send(SOCKS5.reply(.commandNotSupported)))
        #expect(afterGreeting(socksRequest(1, [1, 2, 3, 4], port: 1, command: 3)) == .send(SOCKS5.reply(.commandNotSupported)))
        #expect(afterGreeting([5, 1, 0, 9, 0]) == .send(SOCKS5.reply(.addressTypeNotSupported)))
        #expect(afterGreeting(socksRequest(3, [3] + Array("a b".utf8), port: 80)) == .send(SOCKS5.reply(.hostUnreachable)))
        #expect(afterGreeting(socksRequest(3, [0], port: 80)) == .send(SOCKS5.reply(.hostUnreachable)))

        var http = SOCKS5Frontend(users: nil, peer: peer)
        guard case .close(.rejected, .reset) = feed(&http, http.start(), Array("GET / HTTP/1.1\r\n".utf8)).0 else {
            Issue.record("a non-SOCKS client must be reset"); return
        }
        var empty = SOCKS5Frontend(users: nil, peer: peer)
        guard case .close(.rejected, .reset) = feed(&empty, empty.start(), [5, 0]).0 else { Issue.record("no methods must be a reset"); return }
    }

    @Test("upstream failures map to SOCKS5 reply codes and HTTP statuses")
    func failureMapping() {
        let expected: [(ConvertErrorCode, SOCKS5.Reply, HTTPConnect.Status)] = [
            (.notAuthorized, .notAllowed, .forbidden),
            (.connectionReset, .connectionRefused, .badGateway),
            (.destinationUnreachable, .hostUnreachable, .badGateway),
            (.nameNotResolved, .hostUnreachable, .badGateway),
            (.destinationTimedOut, .ttlExpired, .gatewayTimeout),
            (.networkFailure, .networkUnreachable, .badGateway),
            (.resourceExceeded, .generalFailure, .serviceUnavailable),
        ]
        for (code, reply, status) in expected {
            #expect(SOCKS5Frontend.reply(for: code) == reply, "\(code)")
            #expect(HTTPConnectFrontend.status(for: code) == status, "\(code)")
            var socks = SOCKS5Frontend(users: nil, peer: peer)
            _ = feed(&socks, socks.start(), [5, 1, 0])
            _ = feed(&socks, socks.sent(), socksRequest(1, [1, 2, 3, 4], port: 1))
            #expect(socks.upstreamFailed(ConvertProtocolError(code, "test")) == .send(SOCKS5.reply(reply)))
            guard case .close(.rejected, .drainInbound) = socks.sent() else { Issue.record("after the error reply: close"); continue }
        }
    }

    // MARK: HTTP CONNECT

    @Test("HTTP CONNECT: peek until the empty line, read exactly the header, connect, 200, relay")
    func httpHappyPath() {
        var frontend = HTTPConnectFrontend(users: nil, peer: peer)
        #expect(frontend.start() == .peek(upTo: HTTPConnect.maximumHeaderLength))
        let header = Array("CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\nUser-Agent: curl\r\n\r\n".utf8)
        #expect(frontend.received(Array(header.prefix(20))) == .peek(upTo: HTTPConnect.maximumHeaderLength), "no end yet: look again")
        let queued = header + [0x16, 0x03, 0x01]  // a ClientHello right behind it
        #expect(frontend.received(queued) == .read(upTo: header.count))
        #expect(frontend.received(header) == .connect(ConnectRequest(destination: .name("origin.example", port: 443), originalSource: peer)))
        #expect(frontend.upstreamConnected() == .send(Array("HTTP/1.1 200 Connection Established\r\n\r\n".utf8)))
        #expect(frontend.sent() == .relay)
    }

    @Test("HTTP CONNECT targets: IPv6 in brackets, IPv4, bare LF line ends")
    func httpTargets() throws {
        #expect(try HTTPConnect.parse(Array("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n".utf8)).destination.description == "[2001:db8::1]:443")
        #expect(try HTTPConnect.parse(Array("CONNECT 10.20.0.2:9000 HTTP/1.0\n\n".utf8)).destination == .address(SocketAddress(.v4([10, 20, 0, 2]), port: 9000)))
        #expect(try HTTPConnect.headerLength(Array("CONNECT a:1 HTTP/1.1\n\nrest".utf8)) == 22)
    }

    @Test("HTTP CONNECT errors: each gets its status, and the connection is closed after it")
    func httpErrors() {
        let cases: [(String, HTTPConnect.Status)] = [
            ("GET http://origin/ HTTP/1.1\r\n\r\n", .methodNotAllowed),
            ("CONNECT origin.example HTTP/1.1\r\n\r\n", .badRequest),
            ("CONNECT origin.example:0 HTTP/1.1\r\n\r\n", .badRequest),
            ("CONNECT origin.example:99999 HTTP/1.1\r\n\r\n", .badRequest),
            ("CONNECT [2001:db8::1:443 HTTP/1.1\r\n\r\n", .badRequest),
            ("CONNECT bad_host!:443 HTTP/1.1\r\n\r\n", .badRequest),
            ("CONNECT a:1 HTTP/2.0\r\n\r\n", .versionNotSupported),
            ("CONNECT a:1 HTTP/1.1\r\n folded\r\n\r\n", .badRequest),
            ("CONNECT a:1 HTTP/1.1\r\nno colon\r\n\r\n", .badRequest),
            ("CONNECT  a:1 HTTP/1.1\r\n\r\n", .badRequest),
        ]
        for (text, status) in cases {
            var frontend = HTTPConnectFrontend(users: nil, peer: peer)
            _ = frontend.start()
            let bytes = Array(text.utf8)
            let step = frontend.received(bytes)
            guard case .read(let n) = step else { Issue.record("\(text): \(step)"); continue }
            #expect(frontend.received(Array(bytes.prefix(n))) == .send(HTTPConnect.response(status)), "\(text)")
            guard case .close(.rejected, .drainInbound) = frontend.sent() else { Issue.record("\(text): not closed"); continue }
        }
        var endless = HTTPConnectFrontend(users: nil, peer: peer)
        _ = endless.start()
        #expect(endless.received([UInt8](repeating: UInt8(ascii: "a"), count: HTTPConnect.maximumHeaderLength)) == .send(HTTPConnect.response(.headerTooLarge)))
        var slow = HTTPConnectFrontend(users: nil, peer: peer)
        _ = slow.start()
        _ = slow.received(Array("CONNECT a:1".utf8))
        #expect(slow.timedOut() == .send(HTTPConnect.response(.badRequest)))
    }

    @Test("HTTP CONNECT with users: Basic credentials checked, 407 with a challenge otherwise")
    func httpAuthentication() {
        func run(_ header: String) -> FrontendStep {
            var frontend = HTTPConnectFrontend(users: users, peer: peer)
            _ = frontend.start()
            let bytes = Array(header.utf8)
            guard case .read(let n) = frontend.received(bytes) else { return .relay }
            return frontend.received(Array(bytes.prefix(n)))
        }
        // "alice:s3cret" and "alice:guess" in base64.
        guard case .connect = run("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n") else {
            Issue.record("good credentials must connect"); return
        }
        guard case .connect = run("CONNECT a:1 HTTP/1.1\r\nproxy-authorization:   basic YWxpY2U6czNjcmV0  \r\n\r\n") else {
            Issue.record("field names and the scheme are case-insensitive"); return
        }
        let challenge = HTTPConnect.response(.proxyAuthenticationRequired)
        #expect(String(decoding: challenge, as: UTF8.self).contains("Proxy-Authenticate: Basic realm=\"mptcp-proxy\"\r\n"))
        #expect(run("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6Z3Vlc3M=\r\n\r\n") == .send(challenge))
        #expect(run("CONNECT a:1 HTTP/1.1\r\n\r\n") == .send(challenge))
        #expect(run("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer abc\r\n\r\n") == .send(challenge))
        #expect(run("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic ###\r\n\r\n") == .send(challenge))
    }

    @Test("base64 as RFC 7617 sends it: padded quanta only, nothing outside the alphabet")
    func base64() {
        #expect(Base64.decode(Array("YWxpY2U6czNjcmV0".utf8)[...]) == Array("alice:s3cret".utf8))
        #expect(Base64.decode(Array("YQ==".utf8)[...]) == Array("a".utf8))
        #expect(Base64.decode(Array("YWI=".utf8)[...]) == Array("ab".utf8))
        for bad in ["YQ", "Y===", "YQ=a", "=YWI", "YW I", "", "YQ==YQ=="] {
            #expect(Base64.decode(Array(bad.utf8)[...]) == nil, "\(bad)")
        }
    }

    @Test("users file: lines of USERNAME PASSWORD, mistakes named by line")
    func usersFile() throws {
        let parsed = try ProxyUsers.parse("# LAN users\nalice s3cret\nbob  hunter2 # trailing\n", file: "users")
        #expect(parsed.count == 2)
        #expect(parsed.accepts(username: Array("bob".utf8), password: Array("hunter2".utf8)))
        #expect(!parsed.accepts(username: Array("bob".utf8), password: Array("hunter".utf8)))
        #expect { try ProxyUsers.parse("alice s3cret\nalice again\n", file: "users") } throws: { "\($0)".contains("users:2: alice: duplicate user") }
        #expect { try ProxyUsers.parse("alice\n", file: "users") } throws: { "\($0)".contains("users:1: expected `USERNAME PASSWORD`") }
        #expect { try ProxyUsers.parse("# none\n", file: "users") } throws: { "\($0)".contains("no users") }
    }
}
