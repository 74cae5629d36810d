import ConvertProtocol
import DataPlane
import Glibc
@testable import Proxy
import Testing

@Suite("Handshake state machines")
struct HandshakeStateMachineTests {
    let key = ClientKey(id: "gw", secret: Array(repeating: 9, count: 32))
    let destination = SocketAddress(.v4([192, 0, 2, 1]), port: 443)

    func server() -> ServerHandshake {
        ServerHandshake(authenticator: ConvertAuthenticator(keys: [key], floor: 0))
    }

    @Test("server: reads exactly the request, connects, replies, relays")
    func serverHappyPath() throws {
        var handshake = server()
        let request = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 1000)
        #expect(handshake.start() == .read(upTo: 4))
        #expect(handshake.received(Array(request[0..<4]), now: 1000) == .read(upTo: request.count - 4))
        #expect(handshake.received(Array(request[4...]), now: 1000) == .connect(destination))
        #expect(handshake.keyID == "gw")
        #expect(handshake.connectFinished(errno: 0) == .send(try ConvertMessage.success().encoded()))
        #expect(handshake.replySent() == .startRelay)
        #expect(handshake.state == .relaying)
    }

    @Test("server: connect errors map to RFC 8803 error codes", arguments: [
        (ECONNREFUSED, ConvertErrorCode.connectionReset),
        (EHOSTUNREACH, .destinationUnreachable),
        (ENETUNREACH, .destinationUnreachable),
        (ETIMEDOUT, .destinationUnreachable),
        (EMFILE, .resourceExceeded),
        (EACCES, .networkFailure),
    ])
    func connectErrors(errno code: Int32, expected: ConvertErrorCode) throws {
        var handshake = server()
        let request = try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 1000)
        _ = handshake.received(request, now: 1000)
        #expect(handshake.connectFinished(errno: code) == .send(try ConvertMessage.failure(expected).encoded()))
        guard case .close(.rejected(let error)) = handshake.replySent() else {
            Issue.record("expected a close after the error reply")
            return
        }
        #expect(error.code == expected)
    }

    @Test("server: a bad version is answered with Unsupported Version carrying our version")
    func badVersion() throws {
        var handshake = server()
        let action = handshake.received([2, 1, 0x22, 0x63], now: 0)
        #expect(action == .send(try ConvertMessage.failure(.unsupportedVersion, value: [1]).encoded()))
    }

    @Test("server: deadlines close a slow request and answer a silent destination")
    func deadlines() throws {
        var reading = server()
        _ = reading.received([1], now: 0)
        #expect(reading.timedOut() == .close(.handshakeTimeout))
        var connecting = server()
        _ = connecting.received(try ConvertMessage.signedRequest(to: destination, key: key, timestamp: 5), now: 5)
        #expect(connecting.timedOut() == .send(try ConvertMessage.failure(.destinationUnreachable).encoded()))
    }

    @Test("server: EOF before a whole request closes without a reply")
    func earlyEOF() {
        var handshake = server()
        _ = handshake.received([1, 6], now: 0)
        #expect(handshake.peerClosed() == .close(.peerClosedDuringHandshake))
    }

    @Test("client: sends the request, reads the reply in exact pieces, relays or closes")
    func client() throws {
        let request: [UInt8] = try ConvertMessage([.connect(destination, tcpOptions: [])]).encoded()
        var accepted = ClientHandshake(request: request)
        #expect(accepted.start() == .send(request))
        #expect(accepted.requestSent() == .read(upTo: 4))
        let success = try ConvertMessage.success().encoded()
        #expect(accepted.received(Array(success[0..<4])) == .read(upTo: success.count - 4))
        #expect(accepted.received(Array(success[4...])) == .startRelay)

        var refused = ClientHandshake(request: request)
        _ = refused.requestSent()
        #expect(refused.received(try ConvertMessage.failure(.notAuthorized).encoded()) == .close(.refusedByServer(.notAuthorized)))

        var garbage = ClientHandshake(request: request)
        _ = garbage.requestSent()
        guard case .close(.rejected(let error)) = garbage.received([0x48, 0x54, 0x54, 0x50]) else {
            Issue.record("garbage reply must close")
            return
        }
        #expect(error.code == .unsupportedVersion)
    }
}
