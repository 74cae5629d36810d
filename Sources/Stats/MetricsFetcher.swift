import DataPlane
import Glibc

/// Fetches a proxy's `/metrics` over plain HTTP/1.0 with a short deadline; the monitor must
/// never hang on a slow or absent proxy.
enum MetricsFetcher {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// - Parameter url: `http://HOST:PORT[/path]`, HOST an IPv4 address or `[IPv6]`.
    static func get(_ url: String, timeoutSeconds: Int = 1) throws(Failure) -> String {
        guard url.hasPrefix("http://") else { throw Failure(description: "\(url): only http:// URLs are supported") }
        let rest = url.dropFirst(7)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let hostPort = String(rest[..<slash])
        let path = slash == rest.endIndex ? "/metrics" : String(rest[slash...])
        guard let address = try? SocketAddress(parsing: hostPort) else {
            throw Failure(description: "\(url): \"\(hostPort)\" is not ADDRESS:PORT")
        }
        let fd: Int32
        do { fd = try BlockingSocket.connect(to: address, timeoutSeconds: timeoutSeconds) } catch {
            throw Failure(description: "\(url): \(error)")
        }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(hostPort)\r\n\r\n".utf8)
        do { try request.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) } } catch {
            throw Failure(description: "\(url): \(error)")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while response.count < 8 << 20 {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "read from \(hostPort): \(errno == EAGAIN ? "timed out" : String(cString: strerror(errno)))")
            }
            response += buffer[0..<count]
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let headerEnd = response.indices.dropLast(separator.count - 1).first(where: { response[$0..<$0 + separator.count].elementsEqual(separator) })
        else { throw Failure(description: "\(url): not an HTTP response") }
        let statusLine = String(decoding: response[..<headerEnd].prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
        guard statusLine.split(separator: " ").dropFirst().first == "200" else { throw Failure(description: "\(url): \(statusLine)") }
        return String(decoding: response[(headerEnd + separator.count)...], as: UTF8.self)
    }
}
