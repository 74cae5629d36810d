import ArgumentParser
import DataPlane
import Foundation
import Glibc

/// B3's origin: for each connection, read 100 bytes, answer 100 bytes, close when the client
/// does. On one of our event loops, so the origin costs microseconds per connection and never
/// bounds what is measured.
struct Respond: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Answer each 100-byte request with 100 bytes (B3's origin).")
    @Option(help: "ADDR:PORT to listen on.") var listen: String
    @Flag(help: "Listen with IPPROTO_MPTCP (plain TCP clients are accepted too).") var mptcp = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let loop = try EventLoop(index: 0)
        let (socket, _) = try Socket.makeListener(at: try SocketAddress(parsing: listen), options: ListenerOptions(mptcp: mptcp, reusePort: false))
        let acceptor = RespondAcceptor(listener: socket, loop: loop)
        try loop.register(socket.fd, events: EventLoop.readEvents, handler: acceptor)
        loop.run()
    }
}

final class RespondAcceptor: EventHandler {
    let listener: Socket
    let loop: EventLoop
    var connections: [Int32: RespondConnection] = [:]

    init(listener: Socket, loop: EventLoop) {
        self.listener = listener
        self.loop = loop
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        while let accepted = try? listener.accept() {
            let connection = RespondConnection(socket: accepted, owner: self)
            connections[accepted.fd] = connection
            try? loop.register(accepted.fd, events: EventLoop.streamEvents, handler: connection)
            connection.handleEvents(0, fd: accepted.fd)
        }
    }

    func closed(_ connection: RespondConnection) {
        loop.deregister(connection.socket.fd)
        connections[connection.socket.fd] = nil
        connection.socket.close()
    }
}

final class RespondConnection: EventHandler {
    static let size = 100
    let socket: Socket
    unowned let owner: RespondAcceptor
    var received = 0
    var answered = false
    var buffer = [UInt8](repeating: 0x5a, count: 256)

    init(socket: Socket, owner: RespondAcceptor) {
        self.socket = socket
        self.owner = owner
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        while true {
            switch try? socket.read(into: &buffer) {
            case .processed(0)?, nil:
                owner.closed(self)
                return
            case .processed(let n)?:
                received += n
                if received >= Self.size && !answered {
                    answered = true
                    let reply = [UInt8](repeating: 0xa5, count: Self.size)
                    _ = try? socket.send(reply, from: 0)
                }
            case .wouldBlock?:
                return
            }
        }
    }
}

/// B3's client: connect, send 100 bytes, read 100, close; sequentially or with `parallel`
/// connections in flight. Prints connections/s and the connect-to-first-byte latency p50/p99.
struct SetupLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "setup", abstract: "Connection setup rate and latency (B3's client).")
    @Option(help: "ADDR:PORT to connect to.") var to: String
    @Option(help: "Seconds to run.") var seconds: Double = 5
    @Option(help: "Connections in flight at once.") var parallel: Int = 1
    @Flag(help: "Connect with IPPROTO_MPTCP.") var mptcp = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        let deadline = Date().addingTimeInterval(seconds)
        let results = (0..<parallel).map { _ in SetupResults() }
        let threads = (0..<parallel).map { index in
            OSThread(name: "setup-\(index)") {
                var request = [UInt8](repeating: 0x61, count: RespondConnection.size)
                var reply = [UInt8](repeating: 0, count: RespondConnection.size)
                while Date() < deadline {
                    let started = monotonicMicroseconds()
                    let fd = socket(target.family, Int32(SOCK_STREAM.rawValue), mptcp ? 262 : 0)
                    guard fd >= 0 else { results[index].failures += 1; continue }
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    defer { close(fd) }
                    guard target.withSockAddr({ connect(fd, $0, $1) }) == 0,
                          send(fd, &request, request.count, Int32(MSG_NOSIGNAL)) == request.count else {
                        results[index].failures += 1
                        continue
                    }
                    var got = 0
                    var firstByte: UInt64 = 0
                    while got < reply.count {
                        let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, 0) }
                        if n <= 0 { break }
                        if got == 0 { firstByte = monotonicMicroseconds() }
                        got += n
                    }
                    if got == reply.count {
                        results[index].latencies.append(firstByte - started)
                    } else {
                        results[index].failures += 1
                    }
                }
            }
        }
        threads.forEach { $0.join() }
        let latencies = results.flatMap(\.latencies).sorted()
        let failures = results.map(\.failures).reduce(0, +)
        guard !latencies.isEmpty else { throw ValidationError("no connection completed (\(failures) failed)") }
        func percentile(_ p: Double) -> Double { Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1000 }
        // connections/s, p50 ms, p99 ms, completed, failed
        print(String(format: "%.0f conn/s p50 %.3f ms p99 %.3f ms %d ok %d failed", Double(latencies.count) / seconds, percentile(0.5), percentile(0.99), latencies.count, failures))
    }
}

final class SetupResults: @unchecked Sendable {
    var latencies: [UInt64] = []
    var failures = 0
}
