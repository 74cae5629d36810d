import NetworkTypes
import ProxyProtocols

/// Builds SOCKS5 and HTTP CONNECT client messages that are well formed in shape but extreme in
/// their values: every address type (and unknown ones), name lengths 0-255, ports 0 and 65535,
/// 255-byte usernames, every method count, header blocks near 8 KiB, many fields, odd spacing,
/// base64 at its edges, authority forms with and without brackets and ports.
public struct ProxyRequestGenerator {
    public init() {}

    /// One SOCKS5 client conversation's bytes: greeting, maybe credentials, request.
    public func socks5<C: FuzzChoices>(_ c: inout C) -> [UInt8] {
        let methodCount = c.chance(10) ? 0 : 1 + c.below(255)
        var out: [UInt8] = [c.chance(95) ? 5 : c.byte(), UInt8(methodCount)] + (0..<methodCount).map { _ in c.pick([0, 2, c.byte()]) }
        if c.chance(50) {
            let user = c.chance(10) ? 0 : 1 + c.below(255)
            let password = c.chance(10) ? 0 : 1 + c.below(255)
            out += [c.chance(95) ? 1 : c.byte(), UInt8(user)] + c.bytes(user) + [UInt8(password)] + c.bytes(password)
        }
        out += [c.chance(95) ? 5 : c.byte(), c.pick([1, 2, 3, c.byte()]), c.chance(90) ? 0 : c.byte()]
        switch c.below(4) {
        case 0: out += [1] + c.bytes(4)
        case 1: out += [4] + c.bytes(16)
        case 2:
            let length = c.pick([0, 1, 63, 64, 253, 254, 255, c.below(256)])
            out += [3, UInt8(length)] + (0..<length).map { _ in c.chance(90) ? c.pick(Array("abc-_.09Z".utf8)) : c.byte() }
        default: out += [c.byte()] + c.bytes(c.below(20))
        }
        out += [c.pick([0, 255, c.byte()]), c.pick([0, 255, c.byte()])]
        if c.chance(20) { out += c.bytes(c.below(64)) }  // the application's first bytes behind it
        return out
    }

    /// One HTTP CONNECT header block (and maybe bytes behind it).
    public func httpConnect<C: FuzzChoices>(_ c: inout C) -> [UInt8] {
        let method = c.pick(["CONNECT", "connect", "GET", "CONNECTX", ""])
        let host: String
        switch c.below(5) {
        case 0: host = String(repeating: "a", count: c.pick([1, 63, 64, 253, 254, 300]))
        case 1: host = "[\(c.pick(["2001:db8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "::", "1.2.3.4"]))\(c.chance(80) ? "]" : "")"
        case 2: host = "\(c.byte()).\(c.byte()).\(c.byte()).\(c.byte())"
        case 3: host = String(decoding: c.bytes(c.below(12)), as: UTF8.self)
        default: host = "origin.example"
        }
        let port = c.pick(["", ":", ":0", ":65535", ":65536", ":99999999999", ":\(c.uint16())", ":-1", ":+80"])
        let version = c.pick(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "http/1.1", ""])
        let space = c.pick([" ", "  ", "\t"])
        var text = "\(method)\(space)\(host)\(port) \(version)\r\n"
        for _ in 0..<c.pick([0, 1, 3, 64, 65, c.below(100)]) {
            switch c.below(5) {
            case 0:
                let credentials = c.pick(["YWxpY2U6czNjcmV0", "YQ==", "=", "YWxpY2U", "", "!!!!", String(repeating: "QUFB", count: 1100)])
                text += "\(c.pick(["Proxy-Authorization", "proxy-AUTHORIZATION"])):\(c.pick([" ", "", "   "]))\(c.pick(["Basic", "basic", "Bearer", "Basic "])) \(credentials)\r\n"
            case 1: text += " folded\r\n"
            case 2: text += "X-Long: \(String(repeating: "x", count: c.pick([0, 100, 4000, 9000])))\r\n"
            case 3: text += String(decoding: c.bytes(c.below(40)), as: UTF8.self) + "\r\n"
            default: text += "Host: \(host)\(port)\r\n"
            }
        }
        text += c.pick(["\r\n", "\n", "", "\r\n\r\n"])
        var out = Array(text.utf8)
        if c.chance(20) { out += c.bytes(c.below(64)) }
        return out
    }
}

/// Invariants of the SOCKS5 and HTTP CONNECT codecs on any input, checked by reading the input
/// the way the frontends do (asking each length function how much more to take): a length never
/// shrinks below what was already read, never exceeds the protocol's bound, every read makes
/// progress, and parsing a delimited message either succeeds or throws, never traps.
public enum ProxyProtocolFuzzHarness {
    public static func socks5(_ input: [UInt8]) -> [String] {
        var violations: [String] = []
        var offset = 0
        func take(_ lengthOf: ([UInt8]) throws(SOCKS5.Failure) -> Int?, bound: Int, name: String) -> [UInt8]? {
            var message: [UInt8] = []
            while true {
                let length: Int?
                do { length = try lengthOf(message) } catch { return nil }
                if let length {
                    if length < message.count { violations.append("\(name): length \(length) below the \(message.count) bytes read") }
                    if length > bound { violations.append("\(name): length \(length) above \(bound)") }
                    guard length > message.count else { return message }
                    let want = length - message.count
                    guard offset + want <= input.count else { return nil }
                    message += input[offset..<(offset + want)]
                    offset += want
                } else {
                    guard offset < input.count, message.count < bound else { return nil }
                    message.append(input[offset])
                    offset += 1
                }
            }
        }
        guard let greeting = take({ (m: [UInt8]) throws(SOCKS5.Failure) -> Int? in try SOCKS5.greetingLength(prefix: m[...]) }, bound: 257, name: "greeting") else { return violations }
        let methods = (try? SOCKS5.parseGreeting(greeting)) ?? []
        if methods.isEmpty { violations.append("a delimited greeting did not parse") }
        if methods.contains(2), offset < input.count, input[offset] == 1 {
            guard let auth = take({ (m: [UInt8]) throws(SOCKS5.Failure) -> Int? in try SOCKS5.authenticationLength(prefix: m[...]) }, bound: 513, name: "credentials") else { return violations }
            if (try? SOCKS5.parseAuthentication(auth)) == nil { violations.append("delimited credentials did not parse") }
        }
        guard let request = take({ (m: [UInt8]) throws(SOCKS5.Failure) -> Int? in try SOCKS5.requestLength(prefix: m[...]) }, bound: 262, name: "request") else { return violations }
        if let parsed = try? SOCKS5.parseRequest(request), case .name(let host, _) = parsed.destination, !HostName.isValid(Array(host.utf8)) {
            violations.append("an invalid host name was accepted")
        }
        return violations
    }

    public static func httpConnect(_ input: [UInt8]) -> [String] {
        var violations: [String] = []
        // As the frontend peeks: growing prefixes of what is queued.
        var cut = 0
        while cut < input.count {
            cut = min(input.count, cut + 1 + cut / 2)
            let prefix = Array(input.prefix(cut))
            let length: Int?
            do { length = try HTTPConnect.headerLength(prefix) } catch { return violations }
            guard let length else { continue }
            if length > prefix.count || length > HTTPConnect.maximumHeaderLength + 1 {
                violations.append("header length \(length) outside the \(prefix.count) queued bytes")
            }
            if let request = try? HTTPConnect.parse(Array(prefix.prefix(length))), case .name(let host, _) = request.destination,
               !HostName.isValid(Array(host.utf8)) {
                violations.append("an invalid host name was accepted")
            }
            return violations
        }
        return violations
    }
}
