import ArgumentParser
import DataPlane
import Foundation
import Glibc
import TestSupport

/// B5's origin: accepts connections, answers each one's first byte with one byte (so the
/// client knows the whole chain is connected end to end), and then holds it, idle.
struct Hold: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Accept and hold idle connections (B5's origin).")
    @Option(help: "ADDR:PORT to listen on.") var listen: String

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let listener = try BlockingSocket.listen(on: try SocketAddress(parsing: listen))
        var held: [Int32] = []
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { continue }
            var tv = timeval(tv_sec: 2, tv_usec: 0)  // a readiness probe sends nothing: do not wait long
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var byte: UInt8 = 0
            if recv(fd, &byte, 1, 0) == 1, send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 {
                held.append(fd)
            } else {
                close(fd)
            }
        }
    }
}

/// B5's LAN host: opens COUNT connections one after another, each proven end to end by a
/// one-byte exchange, prints "ready COUNT", and holds them until killed.
struct Open: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open and hold COUNT idle connections (B5).")
    @Option(help: "ADDR:PORT to connect to.") var to: String
    @Option(help: "Connections to open.") var count: Int = 5000

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        var held: [Int32] = []
        held.reserveCapacity(count)
        var retries = 0
        for index in 0..<count {
            // A relay may drop a connection in its first second (shadowsocks-libev's ss-tunnel
            // does, now and then, while its server starts): one that is not answered within 5 s
            // is closed and opened again, and the retries are counted.
            var attempt = 0
            while true {
                let fd = try BlockingSocket.connect(to: target, timeoutSeconds: 10, from: nil)
                var tv = timeval(tv_sec: 5, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var byte = UInt8(truncatingIfNeeded: index)
                if send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1, recv(fd, &byte, 1, 0) == 1 {
                    held.append(fd)
                    break
                }
                close(fd)
                attempt += 1
                retries += 1
                guard attempt < 3 else { throw TrafficError("connection \(index) of \(count) was not answered end to end in 3 attempts") }
            }
        }
        if retries > 0 { FileHandle.standardError.write(Data("open: \(retries) connections retried\n".utf8)) }
        print("ready", held.count)
        fflush(stdout)
        while true { pause() }
    }
}
