import DataPlane
import Glibc
import Testing

/// The splice relay on socket pairs, without a loop.
@Suite("Splice relay")
struct SpliceRelayTests {
    func socketPair() -> (Socket, Socket) {
        var fds: [Int32] = [0, 0]
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds)
        return (Socket(fd: fds[0]), Socket(fd: fds[1]))
    }

    @Test("with no pipe to be had, a relay waits (starved) with its bytes in the socket, then delivers every one")
    func waitsForAPipe() throws {
        let (clientHost, clientSide) = socketPair()
        let (serverSide, serverHost) = socketPair()
        defer { [clientHost, clientSide, serverSide, serverHost].forEach { $0.close() } }
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var written = 0
        while written < bytes.count, case .processed(let n)? = try? clientHost.send(bytes, from: written) { written += n }
        let pipes = PipePool(pipeSize: 1 << 16, maximumLent: 0)
        var relay = SpliceRelay(client: clientSide, server: serverSide)
        let (progress, _) = try relay.pump(pipes: pipes)
        #expect(progress == .starved)
        #expect(relay.upstream.bytesDelivered == 0)
        pipes.maximumLent = 2
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 where received.count < written {
            _ = try relay.pump(pipes: pipes)
            while case .processed(let n)? = try? serverHost.read(into: &buffer), n > 0 { received += buffer[0..<n] }
            if written < bytes.count, case .processed(let n)? = try? clientHost.send(bytes, from: written) { written += n }
        }
        #expect(received == Array(bytes.prefix(received.count)) && received.count == bytes.count)
        relay.release(pipes: pipes)
        #expect(pipes.lent == 0)
    }
}
