import Crypto
import Glibc

/// The LAN users allowed through the SOCKS5 and HTTP CONNECT frontends when the operator asks
/// for credentials (`proxy-users`, `--proxy-users`): one `USERNAME PASSWORD` per line, `#`
/// comments, 1-255 bytes each (SOCKS5's limit), no spaces. Passwords are held as SHA-256 digests
/// and compared digest to digest in constant time, so neither a password's bytes nor its length
/// shows in how long a refusal takes.
public struct ProxyUsers: Sendable, Equatable {
    private var digests: [[UInt8]: [UInt8]] = [:]

    public init() {}

    public init(_ users: [(username: String, password: String)]) {
        for user in users { digests[Array(user.username.utf8)] = Self.digest(Array(user.password.utf8)) }
    }

    public var count: Int { digests.count }

    public func accepts(username: [UInt8], password: [UInt8]) -> Bool {
        // An unknown user costs the same digest and comparison as a known one.
        let expected = digests[username] ?? Self.digest(Array("\u{0}unknown user".utf8))
        let given = Self.digest(password)
        var difference: UInt8 = 0
        for index in 0..<expected.count { difference |= expected[index] ^ given[index] }
        return difference == 0 && digests[username] != nil
    }

    private static func digest(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes)) }

    public static func parse(_ text: String, file: String) throws(ConfigError) -> ProxyUsers {
        var users = ProxyUsers()
        var seen: [String: Int] = [:]
        for (lineNumber, fields) in text.fieldLines {
            guard fields.count == 2 else {
                throw ConfigError(file: file, line: lineNumber, "expected `USERNAME PASSWORD`, found \(fields.count) fields")
            }
            let name = String(fields[0])
            guard name.utf8.count <= 255, fields[1].utf8.count <= 255 else {
                throw ConfigError(file: file, line: lineNumber, key: name, "username and password are at most 255 bytes each")
            }
            if let first = seen[name] {
                throw ConfigError(file: file, line: lineNumber, key: name, "duplicate user (first on line \(first))")
            }
            seen[name] = lineNumber
            users.digests[Array(name.utf8)] = digest(Array(fields[1].utf8))
        }
        guard !users.digests.isEmpty else { throw ConfigError(file: file, "no users in file") }
        return users
    }

    public static func load(path: String) throws(ConfigError) -> ProxyUsers {
        try parse(try readTextFile(path), file: path)
    }
}
