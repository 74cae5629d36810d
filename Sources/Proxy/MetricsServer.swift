import DataPlane
import Glibc
import Logging
import Synchronization

/// Serves `GET /metrics` (Prometheus text) on its own thread, one short request at a time:
/// metrics are small and scraped rarely, so the data-plane loops never see this traffic.
/// A client that sends no complete request within 2 s is dropped.
public final class MetricsServer: Sendable {
    public let address: SocketAddress
    private let listener: Socket
    private let stopping = Atomic<Bool>(false)
    private let thread: Mutex<OSThread?> = Mutex(nil)
    private let render: @Sendable () -> String

    /// Binds now (in `namespace` when given), so a bad address fails at start-up.
    public init(listen: SocketAddress, namespace: NetworkNamespace?, render: @escaping @Sendable () -> String) throws {
        let opened = try OSThread.run(in: namespace) {
            try Socket.makeListener(at: listen, options: ListenerOptions(mptcp: false, reusePort: false, backlog: 64)).socket
        }
        listener = opened
        address = opened.localAddress() ?? listen
        self.render = render
    }

    /// Serves a proxy's metrics, which from now on include its relaying connections.
    public convenience init(listen: SocketAddress, namespace: NetworkNamespace?, metrics: ProxyMetrics) throws {
        try self.init(listen: listen, namespace: namespace, render: { metrics.render() })
        metrics.startExporting()
    }

    public func start(logger: Logger) {
        let started = OSThread(name: "metrics") { [self] in serve() }
        thread.withLock { $0 = started }
        logger.info("metrics on http://\(address)/metrics")
    }

    /// Once; later calls do nothing (a second close could hit a descriptor reused meanwhile).
    public func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // Wakes the accept(2) the thread is blocked in (Linux fails it with EINVAL).
        _ = shutdown(listener.fd, Int32(SHUT_RDWR))
        thread.withLock { $0 }?.join()
        listener.close()
    }

    /// Blocks in accept(2) until a scrape comes or `stop` shuts the listener down: no timer,
    /// no wakeup while nobody scrapes.
    private func serve() {
        let flags = fcntl(listener.fd, F_GETFL)
        _ = fcntl(listener.fd, F_SETFL, flags & ~O_NONBLOCK)
        while !stopping.load(ordering: .acquiring) {
            let accepted: Socket?
            do {
                accepted = try listener.accept()   // the new socket is non-blocking: answer polls it
            } catch {
                if stopping.load(ordering: .acquiring) { return }
                if error.errno == ECONNABORTED { continue }
                // EMFILE and the like: a scrape can wait; do not spin.
                usleep(100_000)
                continue
            }
            guard let client = accepted else { continue }
            answer(client)
            client.close()
        }
    }

    private func answer(_ client: Socket) {
        var request: [UInt8] = []
        let deadline = monotonicMilliseconds() + 2000
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !request.containsHeaderEnd, request.count < 8192 {
            let now = monotonicMilliseconds()
            guard now < deadline else { return }
            var ready = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, Int32(deadline - now)) > 0 else { return }
            let count = recv(client.fd, &buffer, buffer.count, 0)
            if count <= 0 { return }
            request += buffer[0..<count]
        }
        let line = String(decoding: request.prefix { $0 != 0x0D && $0 != 0x0A }, as: UTF8.self).split(separator: " ")
        let (status, body): (String, String)
        if line.count < 2 || line[0] != "GET" {
            (status, body) = ("405 Method Not Allowed", "only GET /metrics\n")
        } else if line[1] == "/metrics" || line[1].hasPrefix("/metrics?") {
            (status, body) = ("200 OK", render())
        } else {
            (status, body) = ("404 Not Found", "try /metrics\n")
        }
        let bodyBytes = Array(body.utf8)
        let response = Array("HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n".utf8) + bodyBytes
        var offset = 0
        while offset < response.count, monotonicMilliseconds() < deadline {
            var ready = pollfd(fd: client.fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            let sent = response[offset...].withUnsafeBytes { send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent <= 0 { return }
            offset += sent
        }
    }
}

extension Array where Element == UInt8 {
    fileprivate var containsHeaderEnd: Bool {
        guard count >= 4 else { return false }
        for index in 0...(count - 4) where self[index] == 0x0D && self[index + 1] == 0x0A && self[index + 2] == 0x0D && self[index + 3] == 0x0A {
            return true
        }
        return false
    }
}
