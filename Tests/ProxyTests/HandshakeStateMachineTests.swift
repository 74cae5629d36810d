import ConvertProtocol
import DataPlane
import Glibc
@testable import Proxy
import Testing

/// The connection machines, each driven by hand: no sockets, no loop, no clock but a fixed one.
@Suite("Connection state machines")
struct HandshakeStateMachineTests {
    let key = ClientKey(id: "gw", secret: Array(repeating: 9, count: 32))
    let destination = SocketAddress(.v4([192, 0, 2, 1]), port: 443)
    let peer = SocketAddress(.v4([10, 1, 1, 1]), port: 40000)
    static let clock: ConvertFrontend.Clock = { (1_000_000, 5_000) }

    func frontend() -> ConvertFrontend {
        ConvertFrontend(authenticator: ConvertAuthenticator(keys: [key], floor: 0), peer: peer, clock: Self.clock)
    }

    func request(_ tlvs: [ConvertTLV]? = nil) throws -> [UInt8] {
        try ConvertMessage.signedRequest(tlvs ?? [.connect(destination, tcpOptions: [])], key: key, timestamp: 1_000_000)
    }

    @Test("server frontend: reads exactly the request, hands over the destination, replies, relays")
    func serverHappyPath() throws {
        var machine = frontend()
        let bytes = try request()
        #expect(machine.start() == .read(upTo: 4))
        #expect(machine.received(Array(bytes[0..<4])) == .read(upTo: bytes.count - 4))
        #expect(machine.received(Array(bytes[4...])) == .connect(ConnectRequest(destination: .address(destination), originalSource: peer, keyID: "gw")))
        #expect(machine.upstreamConnected() == .send(try ConvertMessage.success().encoded()))
        #expect(machine.sent() == .relay)
        #expect(machine.state == .relaying)
    }

    @Test("server frontend: an Info TLV gets the Supported TCP Extensions TLV, alone or beside the success")
    func info() throws {
        var alone = frontend()
        _ = alone.start()
        #expect(alone.received(try request([.info])) == .send(try ConvertMessage.info.encoded()))
        #expect(alone.sent() == .close(.infoAnswered, .drainInbound))
        var both = frontend()
        _ = both.start()
        guard case .connect = both.received(try request([.info, .connect(destination, tcpOptions: [])])) else {
            Issue.record("expected a connect")
            return
        }
        let reply = both.upstreamConnected()
        #expect(reply == .send(try ConvertMessage.success(info: true).encoded()))
        #expect(try ConvertMessage([.extendedTCPHeader([]), .supportedTCPExtensions([30])]).encoded() == (try ConvertMessage.success(info: true).encoded()))
    }

    @Test("server frontend: names and the original source pass to the upstream; MPTCP asked by option 30")
    func namesAndSource() throws {
        var machine = frontend()
        let lan = SocketAddress(.v4([10, 10, 0, 2]), port: 51000)
        let step = machine.received(try request([.destinationName("origin.example", port: 80), .originalSource(lan)]))
        #expect(step == .connect(ConnectRequest(destination: .name("origin.example", port: 80), originalSource: lan, keyID: "gw")))
        var mptcp = frontend()
        guard case .connect(let asked) = mptcp.received(try request([.connect(destination, tcpOptions: [30, 2])])) else {
            Issue.record("expected a connect")
            return
        }
        #expect(asked.wantsMPTCP)
    }

    @Test("server: connect errors map to RFC 8803 error codes and values", arguments: [
        (ECONNREFUSED, ConvertErrorCode.connectionReset, [UInt8(0)]),
        (EHOSTUNREACH, .destinationUnreachable, [1]),
        (ENETUNREACH, .destinationUnreachable, [0]),
        (ETIMEDOUT, .destinationTimedOut, [0]),
        (EMFILE, .resourceExceeded, [0]),
        (EACCES, .networkFailure, [0]),
    ])
    func connectErrors(errno code: Int32, expected: ConvertErrorCode, value: [UInt8]) throws {
        var upstream = DirectUpstream(connectTimeout: 1_000)
        #expect(upstream.start(ConnectRequest(destination: .address(destination)), wallMilliseconds: 0)
                == .dial(DialPlan(candidates: [destination], timeout: 1_000)))
        guard case .failed(let failure) = upstream.dialed(.failed(errno: code)) else {
            Issue.record("expected a failure")
            return
        }
        #expect(failure.code == expected)
        var machine = frontend()
        _ = machine.received(try request())
        #expect(machine.upstreamFailed(failure) == .send(try ConvertMessage.failure(expected, value: value).encoded()))
        #expect(machine.sent() == .close(.rejected(failure), .drainInbound))
    }

    @Test("server frontend: a bad version is answered with Unsupported Version carrying our version")
    func badVersion() throws {
        var machine = frontend()
        #expect(machine.received([2, 1, 0x22, 0x63]) == .send(try ConvertMessage.failure(.unsupportedVersion, value: [1]).encoded()))
    }

    @Test("server frontend: deadlines close a slow request and answer a silent destination")
    func deadlines() throws {
        var reading = frontend()
        _ = reading.received([1])
        #expect(reading.timedOut() == .close(.handshakeTimeout, .reset))
        var connecting = frontend()
        _ = connecting.received(try request())
        #expect(connecting.timedOut() == .send(try ConvertMessage.failure(.destinationTimedOut).encoded()))
    }

    @Test("server frontend: EOF before a whole request closes without a reply")
    func earlyEOF() {
        var machine = frontend()
        _ = machine.received([1, 6])
        #expect(machine.inboundClosed() == .close(.peerClosedDuringHandshake, .reset))
    }

    @Test("server frontend: an impossible event is a loud error, not a guess")
    func impossibleEvent() {
        var machine = frontend()
        guard case .close(.internalError(let what), .reset) = machine.upstreamConnected() else {
            Issue.record("expected an internal error")
            return
        }
        #expect(what.contains("upstream connected in state readingRequest"))
    }

    @Test("direct upstream: a name is resolved, its addresses dialled in Happy Eyeballs order; a failed lookup is Name Not Resolved")
    func directUpstreamNames() throws {
        var upstream = DirectUpstream(connectTimeout: 2_000)
        #expect(upstream.start(ConnectRequest(destination: .name("origin.example", port: 80)), wallMilliseconds: 0) == .resolve("origin.example", port: 80))
        let v6a = IPAddress(parsing: "2001:db8::1")!, v6b = IPAddress(parsing: "2001:db8::2")!
        let v4a = IPAddress(parsing: "192.0.2.1")!, v4b = IPAddress(parsing: "192.0.2.2")!
        guard case .dial(let plan) = upstream.resolved([v6a, v6b, v4a, v4b], error: nil) else {
            Issue.record("expected a dial")
            return
        }
        #expect(plan.candidates.map(\.address) == [v6a, v4a, v6b, v4b])
        var failing = DirectUpstream(connectTimeout: 2_000)
        _ = failing.start(ConnectRequest(destination: .name("nowhere.example", port: 80)), wallMilliseconds: 0)
        guard case .failed(let failure) = failing.resolved([], error: "Name or service not known") else {
            Issue.record("expected a failure")
            return
        }
        #expect(failure.code == .nameNotResolved && failure.reason.contains("nowhere.example"))
    }

    @Test("client upstream: first LAN bytes ride with the signed request; the reply is read exactly")
    func clientUpstream() throws {
        let server = SocketAddress(.v4([203, 0, 113, 7]), port: 4443)
        let lan = SocketAddress(.v4([10, 10, 0, 2]), port: 50000)
        var upstream = ConvertUpstream(endpoint: UpstreamEndpoint(server: server, key: key), servers: ServerEndpoints([server]), connectTimeout: 3_000)
        #expect(upstream.start(ConnectRequest(destination: .address(destination), mayHaveEarlyData: true, originalSource: lan), wallMilliseconds: 1_000_000)
                == .readAvailable(.inbound, upTo: ConvertUpstream.earlyDataLimit))
        guard case .dial(let plan) = upstream.received(.inbound, Array("GET /".utf8)) else {
            Issue.record("expected a dial")
            return
        }
        #expect(plan.candidates == [server] && plan.mptcp && plan.fastOpen && plan.receiveBuffer == MPTCPReceiveBuffer.clientDefault)
        #expect(plan.initialData.suffix(5) == Array("GET /".utf8))
        // The request is a valid signed Convert message with the destination and the LAN host.
        let message = Array(plan.initialData.dropLast(5))
        let decoded = try ConvertMessage.decode(message)
        #expect(decoded.message.connect?.0 == destination && decoded.message.originalSource == lan)
        #expect(try ConvertAuthenticator(keys: [key], floor: 0).authenticate(decoded, wallNow: 1_000_000, monotonicNow: 1) == "gw")
        // Connected: what the LAN host sent during the handshake goes out behind the request,
        // before the reply is awaited (the server relays it once it has connected).
        #expect(upstream.dialed(.connected(server)) == .readAvailable(.inbound, upTo: ConvertUpstream.lateDataLimit))
        #expect(upstream.received(.inbound, Array(" HTTP/1.1".utf8)) == .send(.outbound, Array(" HTTP/1.1".utf8)))
        #expect(upstream.sent(.outbound) == .read(.outbound, upTo: 8))
        #expect(upstream.earlyBytesCarried == 5 + 9)
        let success = try ConvertMessage.success(info: true).encoded()
        #expect(upstream.received(.outbound, Array(success[0..<8])) == .read(.outbound, upTo: success.count - 8))
        #expect(upstream.received(.outbound, Array(success[8...])) == .connected)
        // Nothing more from the LAN host by then: straight to the reply.
        var quiet = ConvertUpstream(endpoint: UpstreamEndpoint(server: server, key: key), servers: ServerEndpoints([server]), connectTimeout: 3_000)
        _ = quiet.start(ConnectRequest(destination: .address(destination), mayHaveEarlyData: true), wallMilliseconds: 1)
        _ = quiet.received(.inbound, [])
        #expect(quiet.dialed(.connected(server)) == .readAvailable(.inbound, upTo: ConvertUpstream.lateDataLimit))
        #expect(quiet.received(.inbound, []) == .read(.outbound, upTo: 8))
        var headerOnly = ConvertUpstream(endpoint: UpstreamEndpoint(server: server, key: key), servers: ServerEndpoints([server]), connectTimeout: 3_000)
        _ = headerOnly.start(ConnectRequest(destination: .address(destination)), wallMilliseconds: 1)
        _ = headerOnly.dialed(.connected(server))
        guard case .failed(let empty) = headerOnly.received(.outbound, [1, 1, 0x22, 0x63, 0x61, 0x62, 0x63, 0x64]) else {
            Issue.record("a header-only reply must fail")
            return
        }
        #expect(empty.reason.contains("no TLV"))

        var refused = ConvertUpstream(endpoint: UpstreamEndpoint(server: server, key: key), servers: ServerEndpoints([server]), connectTimeout: 3_000)
        _ = refused.start(ConnectRequest(destination: .address(destination)), wallMilliseconds: 1)
        _ = refused.dialed(.connected(server))
        guard case .failed(let failure) = refused.received(.outbound, try ConvertMessage.failure(.notAuthorized).encoded()) else {
            Issue.record("expected a failure")
            return
        }
        #expect(failure.code == .notAuthorized && failure.reportedByPeer)
        #expect(CloseReason(upstreamFailure: failure) == .refusedByServer(.notAuthorized))

        var garbage = ConvertUpstream(endpoint: UpstreamEndpoint(server: server, key: key), servers: ServerEndpoints([server]), connectTimeout: 3_000)
        _ = garbage.start(ConnectRequest(destination: .address(destination)), wallMilliseconds: 1)
        _ = garbage.dialed(.connected(server))
        guard case .failed(let bad) = garbage.received(.outbound, [0x48, 0x54, 0x54, 0x50]) else {
            Issue.record("garbage reply must fail")
            return
        }
        #expect(bad.code == .unsupportedVersion && !bad.reportedByPeer)
    }

    @Test("client upstream: a LAN host that half-closes before sending still gets its connection")
    func clientUpstreamHalfClose() throws {
        var upstream = ConvertUpstream(endpoint: UpstreamEndpoint(server: destination, key: key), servers: ServerEndpoints([destination]), connectTimeout: 3_000)
        _ = upstream.start(ConnectRequest(destination: .address(destination), mayHaveEarlyData: true), wallMilliseconds: 1)
        guard case .dial = upstream.closed(.inbound) else {
            Issue.record("expected a dial")
            return
        }
    }

    @Test("fixed-destination frontend: connects at once, relays when through, resets on failure")
    func fixedDestination() throws {
        var machine = FixedDestinationFrontend(destination: .address(destination), source: peer)
        #expect(machine.start() == .connect(ConnectRequest(destination: .address(destination), mayHaveEarlyData: true, originalSource: peer)))
        #expect(machine.upstreamConnected() == .relay)
        var failing = FixedDestinationFrontend(destination: .address(destination), source: peer)
        _ = failing.start()
        let failure = ConvertProtocolError(.connectionReset, "x", reportedByPeer: true)
        #expect(failing.upstreamFailed(failure) == .close(.refusedByServer(.connectionReset), .reset))
    }

    @Test("dial scheduler: the next candidate after the attempt delay or at once on failure; the first to connect wins")
    func dialScheduler() {
        var scheduler = DialScheduler(candidateCount: 3)
        #expect(scheduler.begin() == .init(start: 0, armDelay: true))
        #expect(scheduler.delayElapsed() == .init(start: 1, armDelay: true))
        #expect(scheduler.attemptFailed(0, errno: ECONNREFUSED) == .init(start: 2, armDelay: false))
        #expect(scheduler.attemptSucceeded(2) == .init(outcome: .success(2)))
        #expect(scheduler.attemptSucceeded(1) == .init())  // too late: already over
        var failing = DialScheduler(candidateCount: 2)
        _ = failing.begin()
        _ = failing.attemptFailed(0, errno: ENETUNREACH)
        #expect(failing.attemptFailed(1, errno: EHOSTUNREACH) == .init(outcome: .failure(.init(errno: EHOSTUNREACH))))
        var empty = DialScheduler(candidateCount: 0)
        #expect(empty.begin().outcome == .failure(.init(errno: ENETUNREACH)))
    }

    @Test("exclusive dial (the client's servers): one attempt at a time, a slow one closed before the next starts; a late answer from it is ignored")
    func exclusiveDial() {
        var scheduler = DialScheduler(candidateCount: 3, exclusive: true)
        #expect(scheduler.begin() == .init(start: 0, armDelay: true))
        #expect(scheduler.delayElapsed() == .init(start: 1, armDelay: true, abandon: [0]))
        #expect(scheduler.attemptSucceeded(0) == .init())   // abandoned: it cannot win
        #expect(scheduler.attemptFailed(1, errno: ECONNREFUSED) == .init(start: 2, armDelay: false))
        #expect(scheduler.delayElapsed() == .init())          // the last one runs to the dial's deadline
        #expect(scheduler.attemptSucceeded(2) == .init(outcome: .success(2)))
        var allSlow = DialScheduler(candidateCount: 2, exclusive: true)
        _ = allSlow.begin()
        _ = allSlow.delayElapsed()
        #expect(allSlow.attemptFailed(1, errno: ETIMEDOUT) == .init(outcome: .failure(.init(errno: ETIMEDOUT))))
    }
}
