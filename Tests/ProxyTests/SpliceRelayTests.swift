import DataPlane
import Glibc
import CLinuxShim
import NetworkTypes
import Testing

/// The splice relay on socket pairs, without a loop.
@Suite("Splice relay")
struct SpliceRelayTests {
    /// The loop's copy buffer, as an EventLoop has one.
    let copyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: EventLoop.copyBufferSize, alignment: 64)

    func socketPair() throws -> (Socket, Socket) {
        var fds: [Int32] = [-1, -1]
        // Checked: on failure the pair would be (0, 0), and closing it would close another
        // test's descriptor that took number 0.
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
            throw SystemError("socketpair", errno: errno)
        }
        return (Socket(fd: fds[0]), Socket(fd: fds[1]))
    }

    @Test("with no pipe to be had, a relay waits (starved) with its bytes in the socket, then delivers every one")
    func waitsForAPipe() throws {
        let (clientHost, clientSide) = try socketPair()
        let (serverSide, serverHost) = try socketPair()
        defer { [clientHost, clientSide, serverSide, serverHost].forEach { $0.close() } }
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var written = 0
        while written < bytes.count, case .processed(let n)? = try? clientHost.send(bytes, from: written) { written += n }
        let pipes = PipePool(pipeSize: 1 << 16, maximumLent: 0)
        var relay = SpliceRelay(client: clientSide, server: serverSide)
        let (progress, _) = try relay.pump(pipes: pipes, copyBuffer: copyBuffer)
        // The first read is copied; it fills the copy buffer, so what follows is spliced.
        #expect(progress == .starved)
        #expect(relay.upstream.splicing)
        #expect(relay.upstream.bytesDelivered == UInt64(copyBuffer.count))
        pipes.maximumLent = 2
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 where received.count < written {
            _ = try relay.pump(pipes: pipes, copyBuffer: copyBuffer)
            while case .processed(let n)? = try? serverHost.read(into: &buffer), n > 0 { received += buffer[0..<n] }
            if written < bytes.count, case .processed(let n)? = try? clientHost.send(bytes, from: written) { written += n }
        }
        #expect(received == Array(bytes.prefix(received.count)) && received.count == bytes.count)
        relay.release(pipes: pipes)
        #expect(pipes.lent == 0)
    }

    /// A connected loopback TCP pair (tcp_splice_read, unlike a Unix socket pair).
    func tcpPair() throws -> (Socket, Socket) {
        let (listener, _) = try Socket.makeListener(at: SocketAddress(.v4([127, 0, 0, 1]), port: 0), options: ListenerOptions(mptcp: false))
        defer { listener.close() }
        let client = try Socket.makeStream(family: AF_INET, mptcp: false).socket
        _ = try client.connect(to: listener.localAddress()!)
        var accepted: Socket?
        for _ in 0..<1000 where accepted == nil {
            accepted = try listener.accept()
            if accepted == nil { usleep(1000) }
        }
        return (client, try #require(accepted))
    }

    @Test("a splice cut short by the pipe's slots does not pass for a drained source: with no new edge on the source, every byte still arrives")
    func shortSpliceIsNotDrained() throws {
        let (sender, source) = try tcpPair()
        let (destination, receiver) = try socketPair()
        defer { [sender, source, destination, receiver].forEach { $0.close() } }
        sender.setNoDelay()
        // Many small segments, all queued at the source before the relay reads: from here on
        // nothing arrives there, so an edge-triggered loop would never report it again.
        let bytes = (0..<64_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        var written = 0
        while written < bytes.count {
            let chunk = Array(bytes[written..<min(written + 500, bytes.count)])
            guard case .processed(let n) = try sender.send(chunk, from: 0) else { Issue.record("send would block"); return }
            written += n
        }
        for _ in 0..<1000 where mpx_bytes_queued(source.fd) < bytes.count { usleep(1000) }
        #expect(mpx_bytes_queued(source.fd) == bytes.count)
        // A one-page pipe has a single slot, so a splice from the socket stops at one buffer.
        let pipes = PipePool(pipeSize: 4096)
        var relay = SpliceRelay(client: source, server: destination)
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<10_000 where received.count < bytes.count {
            _ = try relay.pump(pipes: pipes, copyBuffer: copyBuffer)
            while case .processed(let n)? = try? receiver.read(into: &buffer), n > 0 { received += buffer[0..<n] }
            // The only edges: the destination drained (as epoll would report EPOLLOUT).
            relay.noteEvents(MPX_EPOLLOUT, fd: destination.fd)
        }
        #expect(received.count == bytes.count && received == bytes)
        relay.release(pipes: pipes)
    }

    @Test("a request and its response are copied, not spliced: no pipe is borrowed, EOF is forwarded once")
    func smallExchangeIsCopied() throws {
        let (clientHost, clientSide) = try socketPair()
        let (serverSide, serverHost) = try socketPair()
        defer { [clientHost, clientSide, serverSide, serverHost].forEach { $0.close() } }
        let pipes = PipePool(pipeSize: 1 << 16, maximumLent: 0)   // a splice would starve
        var relay = SpliceRelay(client: clientSide, server: serverSide)
        let request = [UInt8](repeating: 0x61, count: 100), response = [UInt8](repeating: 0x62, count: 300)
        _ = try clientHost.send(request, from: 0)
        clientHost.shutdownWrite()
        relay.noteEvents(MPX_EPOLLIN | MPX_EPOLLRDHUP, fd: clientSide.fd)   // as epoll would report
        #expect(try relay.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .waiting)
        var buffer = [UInt8](repeating: 0, count: 1024)
        #expect(try serverHost.read(into: &buffer) == .processed(100))
        #expect(try serverHost.read(into: &buffer) == .processed(0))   // the half-close, forwarded
        _ = try serverHost.send(response, from: 0)
        serverHost.shutdownWrite()
        relay.noteEvents(MPX_EPOLLIN | MPX_EPOLLRDHUP, fd: serverSide.fd)   // as epoll would report
        #expect(try relay.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .finished)
        #expect(try clientHost.read(into: &buffer) == .processed(300) && Array(buffer[0..<300]) == response)
        #expect(relay.upstream.bytesDelivered == 100 && relay.downstream.bytesDelivered == 300)
        #expect(!relay.upstream.splicing && !relay.downstream.splicing && pipes.lent == 0)
    }

    @Test("an EOF the owner holds: the bytes before it go at once, the EOF when released; once the other direction is done it no longer waits")
    func heldEOF() throws {
        let (clientHost, clientSide) = try socketPair()
        let (serverSide, serverHost) = try socketPair()
        defer { [clientHost, clientSide, serverSide, serverHost].forEach { $0.close() } }
        let pipes = PipePool(pipeSize: 1 << 16, maximumLent: 0)
        var buffer = [UInt8](repeating: 0, count: 1024)
        var relay = SpliceRelay(client: clientSide, server: serverSide)
        relay.upstream.holdsEOF = true
        _ = try clientHost.send([UInt8](repeating: 0x61, count: 100), from: 0)
        clientHost.shutdownWrite()
        relay.noteEvents(MPX_EPOLLIN | MPX_EPOLLRDHUP, fd: clientSide.fd)
        #expect(try relay.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .waiting)
        #expect(try serverHost.read(into: &buffer) == .processed(100))
        #expect(try serverHost.read(into: &buffer) == .wouldBlock)   // no EOF yet
        #expect(relay.upstream.holdingEOF && !relay.upstream.finished)
        // Pumping again changes nothing while it is held.
        #expect(try relay.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .waiting)
        #expect(try serverHost.read(into: &buffer) == .wouldBlock)
        relay.upstream.holdsEOF = false
        #expect(try relay.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .waiting)
        #expect(try serverHost.read(into: &buffer) == .processed(0))
        #expect(relay.upstream.finished && !relay.upstream.holdingEOF)

        // Held, then the far side finishes: the EOF now ends the relay.
        let (clientHost2, clientSide2) = try socketPair()
        let (serverSide2, serverHost2) = try socketPair()
        defer { [clientHost2, clientSide2, serverSide2, serverHost2].forEach { $0.close() } }
        var second = SpliceRelay(client: clientSide2, server: serverSide2)
        second.upstream.holdsEOF = true
        clientHost2.shutdownWrite()
        second.noteEvents(MPX_EPOLLIN | MPX_EPOLLRDHUP, fd: clientSide2.fd)
        #expect(try second.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .waiting)
        serverHost2.shutdownWrite()
        second.noteEvents(MPX_EPOLLIN | MPX_EPOLLRDHUP, fd: serverSide2.fd)
        _ = try second.pump(pipes: pipes, copyBuffer: copyBuffer)
        #expect(second.downstream.finished)
        #expect(try second.pump(pipes: pipes, copyBuffer: copyBuffer).progress == .finished)
    }

    @Test("copied bytes a full destination does not take are held, in order, and nothing more is read until they are written")
    func copiedRemainderKeepsOrder() throws {
        let (clientHost, clientSide) = try socketPair()
        let (serverSide, serverHost) = try socketPair()
        defer { [clientHost, clientSide, serverSide, serverHost].forEach { $0.close() } }
        try serverSide.setOption(level: SOL_SOCKET, name: SO_SNDBUF, 4096, "SO_SNDBUF")
        let pipes = PipePool(pipeSize: 1 << 16, maximumLent: 0)
        var relay = SpliceRelay(client: clientSide, server: serverSide)
        // Messages shorter than the copy buffer, so the direction keeps copying, until the
        // destination is full and a copy is only partly sent.
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        var written = 0, received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var sawRemainder = false
        for round in 0..<20_000 where received.count < bytes.count {
            // More keeps arriving while a remainder is held (but less than a copy buffer).
            if written < bytes.count, mpx_bytes_queued(clientSide.fd) < 6000,
               case .processed(let n)? = try? clientHost.send(Array(bytes[written..<min(written + 3000, bytes.count)]), from: 0) {
                written += n
            }
            _ = try relay.pump(pipes: pipes, copyBuffer: copyBuffer)
            if relay.upstream.bytesInFlight > 0 { sawRemainder = true }
            // The receiver reads only every few rounds, so the destination fills up.
            if round % 4 == 3 {
                while case .processed(let n)? = try? serverHost.read(into: &buffer), n > 0 { received += buffer[0..<n] }
                relay.noteEvents(MPX_EPOLLOUT, fd: serverSide.fd)
            }
            relay.noteEvents(MPX_EPOLLIN, fd: clientSide.fd)
        }
        #expect(sawRemainder)
        #expect(!relay.upstream.splicing && pipes.lent == 0)
        #expect(received.count == bytes.count && received == bytes)
    }
}

extension SpliceRelayTests {
    @Test("TCP both ends, bursts below and above the copy buffer, a slow reader: every byte in order")
    func tcpStress() throws {
        let (sender, source) = try tcpPair()
        let (destination, receiver) = try tcpPair()
        defer { [sender, source, destination, receiver].forEach { $0.close() } }
        try destination.setOption(level: SOL_SOCKET, name: SO_SNDBUF, 8192, "SO_SNDBUF")
        let pipes = PipePool(pipeSize: 1 << 16)
        var relay = SpliceRelay(client: source, server: destination)
        let bytes = (0..<600_000).map { UInt8(truncatingIfNeeded: ($0 &* 2654435761) >> 13) }
        var written = 0, received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var rng = SystemRandomNumberGenerator()
        for round in 0..<200_000 where received.count < bytes.count {
            if written < bytes.count, Int.random(in: 0..<3, using: &rng) == 0 {
                let size = [100, 3000, 16384, 20000, 1][Int.random(in: 0..<5, using: &rng)]
                if case .processed(let n)? = try? sender.send(Array(bytes[written..<min(written + size, bytes.count)]), from: 0) { written += n }
            }
            relay.noteEvents(MPX_EPOLLIN | MPX_EPOLLOUT, fd: source.fd)
            relay.noteEvents(MPX_EPOLLIN | MPX_EPOLLOUT, fd: destination.fd)
            _ = try relay.pump(pipes: pipes, copyBuffer: copyBuffer)
            if round % 3 == 0 {
                while case .processed(let n)? = try? receiver.read(into: &buffer), n > 0 { received += buffer[0..<n] }
            }
        }
        #expect(received.count == bytes.count)
        #expect(received == Array(bytes.prefix(received.count)))
    }
}
