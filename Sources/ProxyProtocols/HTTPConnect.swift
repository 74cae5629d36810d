import NetworkTypes

/// An HTTP/1.1 CONNECT request (RFC 9110 §9.3.6) as a proxy reads it: the header block ends at
/// the first empty line, so a reader looks at what is queued (`headerLength`), then takes exactly
/// the header and leaves whatever the client sent behind it (a TLS ClientHello) for the relay.
/// Parsing is total: any bytes give a request or an `HTTPConnect.Failure` carrying the status to
/// answer with.
public enum HTTPConnect {
    /// Longest header block accepted (request line and fields); longer is 431.
    public static let maximumHeaderLength = 8192
    public static let maximumFields = 64

    public struct Request: Equatable, Sendable {
        public var destination: Destination
        /// From `Proxy-Authorization: Basic …`, if present and well formed.
        public var credentials: (username: [UInt8], password: [UInt8])?

        public init(destination: Destination, credentials: (username: [UInt8], password: [UInt8])? = nil) {
            self.destination = destination
            self.credentials = credentials
        }

        public static func == (a: Request, b: Request) -> Bool {
            a.destination == b.destination && a.credentials?.username == b.credentials?.username
                && a.credentials?.password == b.credentials?.password
        }
    }

    public enum Status: Int, Sendable, Equatable {
        case ok = 200
        case badRequest = 400
        case forbidden = 403
        case methodNotAllowed = 405
        case proxyAuthenticationRequired = 407
        case headerTooLarge = 431
        case badGateway = 502
        case serviceUnavailable = 503
        case gatewayTimeout = 504
        case versionNotSupported = 505

        public var phrase: String {
            switch self {
            case .ok: return "Connection Established"
            case .badRequest: return "Bad Request"
            case .forbidden: return "Forbidden"
            case .methodNotAllowed: return "Method Not Allowed"
            case .proxyAuthenticationRequired: return "Proxy Authentication Required"
            case .headerTooLarge: return "Request Header Fields Too Large"
            case .badGateway: return "Bad Gateway"
            case .serviceUnavailable: return "Service Unavailable"
            case .gatewayTimeout: return "Gateway Timeout"
            case .versionNotSupported: return "HTTP Version Not Supported"
            }
        }
    }

    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public var status: Status
        public var reason: String
        public init(_ status: Status, _ reason: String) {
            self.status = status
            self.reason = reason
        }
        public var description: String { reason }
    }

    /// The header block's length (through its empty line) if `queued` holds all of it; nil if
    /// more is needed; throws once it cannot end within `maximumHeaderLength`.
    public static func headerLength(_ queued: [UInt8]) throws(Failure) -> Int? {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        var index = 0
        while index < queued.count {
            if queued[index] == lf {
                // "\n\n" or "\r\n\r\n": an empty line ends the header (RFC 9112 §2.2 lets a
                // recipient accept a bare LF as a line end).
                if index >= 1, queued[index - 1] == lf { return index + 1 }
                if index >= 2, queued[index - 1] == cr, queued[index - 2] == lf { return index + 1 }
            }
            index += 1
            if index > maximumHeaderLength { break }
        }
        guard queued.count < maximumHeaderLength else {
            throw Failure(.headerTooLarge, "no end of the header within \(maximumHeaderLength) bytes")
        }
        return nil
    }

    /// A whole header block (as `headerLength` delimited it).
    public static func parse(_ header: [UInt8]) throws(Failure) -> Request {
        var lines = splitLines(header)
        // The empty line that ended the block.
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { throw Failure(.badRequest, "empty request") }
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw Failure(.badRequest, "request line \(PeerText.escaped(bytes: requestLine)) is not METHOD TARGET VERSION") }
        guard parts[2].elementsEqual("HTTP/1.1".utf8) || parts[2].elementsEqual("HTTP/1.0".utf8) else {
            throw Failure(.versionNotSupported, "version \(PeerText.escaped(bytes: parts[2]))")
        }
        guard parts[0].elementsEqual("CONNECT".utf8) else {
            throw Failure(.methodNotAllowed, "method \(PeerText.escaped(bytes: parts[0])): only CONNECT is served")
        }
        let destination = try parseAuthority(parts[1])
        guard lines.count - 1 <= maximumFields else { throw Failure(.headerTooLarge, "more than \(maximumFields) header fields") }
        var credentials: (username: [UInt8], password: [UInt8])?
        for line in lines.dropFirst() {
            guard let first = line.first, first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else {
                throw Failure(.badRequest, "folded or empty header line")  // obs-fold: RFC 9112 §5.2 lets us refuse it
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                  line[line.startIndex..<colon].allSatisfy(isTokenByte) else {
                throw Failure(.badRequest, "header line \(PeerText.escaped(bytes: line)) is not NAME: VALUE")
            }
            let name = line[line.startIndex..<colon]
            guard name.elementsEqualIgnoringCase("proxy-authorization") else { continue }
            guard credentials == nil else { throw Failure(.badRequest, "Proxy-Authorization given twice") }
            let value = trimmed(line[(colon + 1)...])
            credentials = try parseBasic(value)
        }
        return Request(destination: destination, credentials: credentials)
    }

    /// "host:port", "[v6]:port", "1.2.3.4:port" (RFC 9110 authority-form; the port is required).
    static func parseAuthority(_ target: ArraySlice<UInt8>) throws(Failure) -> Destination {
        guard let colon = target.lastIndex(of: UInt8(ascii: ":")) else {
            throw Failure(.badRequest, "target \(PeerText.escaped(bytes: target)) has no port")
        }
        let portText = target[(colon + 1)...]
        guard (1...5).contains(portText.count), portText.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let port = UInt16(String(decoding: portText, as: UTF8.self)), port > 0 else {
            throw Failure(.badRequest, "target \(PeerText.escaped(bytes: target)) has no valid port")
        }
        var host = target[target.startIndex..<colon]
        if host.first == UInt8(ascii: "[") {
            guard host.last == UInt8(ascii: "]"), host.count > 2 else { throw Failure(.badRequest, "target \(PeerText.escaped(bytes: target)): unclosed [") }
            host = host.dropFirst().dropLast()
            guard let address = IPAddress(parsing: String(decoding: host, as: UTF8.self)), case .v6 = address else {
                throw Failure(.badRequest, "target \(PeerText.escaped(bytes: target)): not an IPv6 address in brackets")
            }
            return .address(SocketAddress(address.normalized, port: port))
        }
        guard HostName.isValid(host) else { throw Failure(.badRequest, "host \(PeerText.escaped(bytes: host)) is not a valid DNS name") }
        let text = String(decoding: host, as: UTF8.self)
        if let address = IPAddress(parsing: text), case .v4 = address { return .address(SocketAddress(address, port: port)) }
        return .name(text, port: port)
    }

    /// `Basic base64(user:password)` (RFC 7617).
    static func parseBasic(_ value: ArraySlice<UInt8>) throws(Failure) -> (username: [UInt8], password: [UInt8]) {
        guard value.count > 6, value.prefix(5).elementsEqualIgnoringCase("basic"), value[value.startIndex + 5] == UInt8(ascii: " ") else {
            throw Failure(.proxyAuthenticationRequired, "Proxy-Authorization is not Basic")
        }
        guard let decoded = Base64.decode(trimmed(value.dropFirst(6))) else {
            throw Failure(.proxyAuthenticationRequired, "Proxy-Authorization: Basic value is not base64")
        }
        guard let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else {
            throw Failure(.proxyAuthenticationRequired, "Proxy-Authorization: Basic value has no user:password")
        }
        return (Array(decoded[..<colon]), Array(decoded[(colon + 1)...]))
    }

    /// The response; errors close the connection and say why in a fixed text body (never a
    /// peer's bytes). 407 asks for Basic credentials.
    public static func response(_ status: Status) -> [UInt8] {
        guard status != .ok else { return Array("HTTP/1.1 200 Connection Established\r\n\r\n".utf8) }
        let body = "\(status.rawValue) \(status.phrase)\n"
        var text = "HTTP/1.1 \(status.rawValue) \(status.phrase)\r\n"
        if status == .proxyAuthenticationRequired { text += "Proxy-Authenticate: Basic realm=\"mptcp-proxy\"\r\n" }
        if status == .methodNotAllowed { text += "Allow: CONNECT\r\n" }
        text += "Content-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        return Array(text.utf8)
    }

    // MARK: helpers

    private static func splitLines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { line in
            line.last == UInt8(ascii: "\r") ? line.dropLast() : line
        }
    }

    private static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let first = slice.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { slice = slice.dropFirst() }
        while let last = slice.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { slice = slice.dropLast() }
        return slice
    }

    /// RFC 9110 tchar.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}

extension Collection where Element == UInt8 {
    func elementsEqualIgnoringCase(_ ascii: String) -> Bool {
        elementsEqual(ascii.utf8) { a, b in
            let lower = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(a) ? a | 0x20 : a
            return lower == b
        }
    }
}

/// Standard base64 (RFC 4648 §4) decoding, padding required to a whole quantum as RFC 7617's
/// credentials are sent. Nothing in the standard library or the project's packages decodes it
/// without Foundation, which the static binaries leave out.
enum Base64 {
    static func decode(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        guard !text.isEmpty, text.count % 4 == 0, text.count <= 4096 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        var quantum: UInt32 = 0
        var filled = 0
        var padding = 0
        for (offset, byte) in text.enumerated() {
            let value: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(byte - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(byte - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="):
                // Only in the last two places.
                guard offset >= text.count - 2 else { return nil }
                padding += 1
                value = 0
            default: return nil
            }
            if padding > 0 && byte != UInt8(ascii: "=") { return nil }
            quantum = quantum << 6 | value
            filled += 1
            if filled == 4 {
                out.append(UInt8(truncatingIfNeeded: quantum >> 16))
                out.append(UInt8(truncatingIfNeeded: quantum >> 8))
                out.append(UInt8(truncatingIfNeeded: quantum))
                quantum = 0
                filled = 0
            }
        }
        out.removeLast(padding)
        return out
    }
}
