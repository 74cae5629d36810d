import DataPlane
import Glibc
import Logging
import Proxy
import Testing

@Suite("Metrics endpoint")
struct MetricsServerTests {
    /// Sends `request` to the server and returns everything it answers before closing.
    static func exchange(_ address: SocketAddress, _ request: String, pauseAfterConnect: UInt32 = 0) -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard (try? address.withSockAddr { connect(fd, $0, $1) }) == 0 else { return "connect failed" }
        usleep(pauseAfterConnect)
        _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    @Test("GET /metrics answers 200 with the text; other paths 404, other methods 405; a silent client is dropped")
    func endpoint() throws {
        // Port 0: a fixed port in the ephemeral range collides with other tests' outgoing connections.
        let server = try MetricsServer(listen: SocketAddress(.v4([127, 0, 0, 1]), port: 0), namespace: nil,
                                       render: { "mptcp_proxy_connections_active{role=\"client\"} 7\n" })
        server.start(logger: Logger(label: "test"))
        defer { server.stop() }
        let ok = Self.exchange(server.address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(ok.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(ok.hasSuffix("\r\n\r\nmptcp_proxy_connections_active{role=\"client\"} 7\n"))
        #expect(ok.contains("Content-Length: 48\r\n"))
        #expect(Self.exchange(server.address, "GET / HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 404"))
        #expect(Self.exchange(server.address, "POST /metrics HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 405"))
        #expect(Self.exchange(server.address, "\u{1}\u{2}garbage\r\n\r\n").hasPrefix("HTTP/1.0 405"))
        // No complete request within 2 s: closed without an answer, and the next client is served.
        let started = monotonicMilliseconds()
        #expect(Self.exchange(server.address, "GET /metr") == "")
        #expect(monotonicMilliseconds() - started < 3_000)
        #expect(Self.exchange(server.address, "GET /metrics HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 200"))
    }
}
