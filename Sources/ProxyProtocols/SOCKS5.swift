import NetworkTypes

/// SOCKS version 5 (RFC 1928) with username/password authentication (RFC 1929), the messages
/// a CONNECT proxy needs. Every message is framed by its own bytes: `length(prefix:)` says how
/// long the whole message is once enough of it is known, so a reader takes exactly one message
/// and never a byte of the stream behind it. Parsing is total: any byte string gives a message
/// or a `SOCKS5.Failure` with the reply code to answer it with.
public enum SOCKS5 {
    public static let version: UInt8 = 5

    public enum Method: UInt8, Sendable {
        case noAuthentication = 0x00
        case usernamePassword = 0x02
        case noAcceptable = 0xff
    }

    /// RFC 1928 §6 reply codes.
    public enum Reply: UInt8, Sendable, Equatable, CustomStringConvertible {
        case succeeded = 0x00
        case generalFailure = 0x01
        case notAllowed = 0x02
        case networkUnreachable = 0x03
        case hostUnreachable = 0x04
        case connectionRefused = 0x05
        case ttlExpired = 0x06
        case commandNotSupported = 0x07
        case addressTypeNotSupported = 0x08

        public var description: String {
            switch self {
            case .succeeded: return "succeeded"
            case .generalFailure: return "general SOCKS server failure"
            case .notAllowed: return "connection not allowed by ruleset"
            case .networkUnreachable: return "network unreachable"
            case .hostUnreachable: return "host unreachable"
            case .connectionRefused: return "connection refused"
            case .ttlExpired: return "TTL expired"
            case .commandNotSupported: return "command not supported"
            case .addressTypeNotSupported: return "address type not supported"
            }
        }
    }

    public enum Command: UInt8, Sendable {
        case connect = 1
        case bind = 2
        case udpAssociate = 3
    }

    /// A message that cannot be served: the reply code for it (nil: the peer does not speak
    /// SOCKS5 at all, so nothing in SOCKS5 can be answered) and why, for the log.
    public struct Failure: Error, Equatable, Sendable, CustomStringConvertible {
        public var reply: Reply?
        public var reason: String
        public init(_ reply: Reply?, _ reason: String) {
            self.reply = reply
            self.reason = reason
        }
        public var description: String { reason }
    }

    // MARK: greeting (client → server): VER NMETHODS METHODS...

    /// The greeting's whole length once its first two bytes are known.
    public static func greetingLength(prefix: ArraySlice<UInt8>) throws(Failure) -> Int? {
        guard prefix.count >= 2 else { return nil }
        let first = prefix[prefix.startIndex]
        guard first == version else { throw Failure(nil, "greeting version \(first), not 5") }
        let methods = Int(prefix[prefix.startIndex + 1])
        guard methods > 0 else { throw Failure(nil, "greeting offers no method") }
        return 2 + methods
    }

    /// The methods a whole greeting offers.
    public static func parseGreeting(_ bytes: [UInt8]) throws(Failure) -> Set<UInt8> {
        guard let length = try greetingLength(prefix: bytes[...]), bytes.count == length else {
            throw Failure(nil, "greeting of \(bytes.count) bytes is cut short")
        }
        return Set(bytes[2...])
    }

    public static func methodSelection(_ method: Method) -> [UInt8] { [version, method.rawValue] }

    // MARK: username/password (RFC 1929): VER(1) ULEN UNAME PLEN PASSWD

    public struct Credentials: Equatable, Sendable {
        public var username: [UInt8]
        public var password: [UInt8]
        public init(username: [UInt8], password: [UInt8]) {
            self.username = username
            self.password = password
        }
    }

    /// The sub-negotiation's whole length, known in two steps (after ULEN, then after PLEN).
    public static func authenticationLength(prefix: ArraySlice<UInt8>) throws(Failure) -> Int? {
        guard prefix.count >= 2 else { return nil }
        let start = prefix.startIndex
        guard prefix[start] == 1 else { throw Failure(nil, "username/password version \(prefix[start]), not 1") }
        let usernameLength = Int(prefix[start + 1])
        guard usernameLength > 0 else { throw Failure(nil, "empty username") }
        let passwordLengthAt = 2 + usernameLength
        guard prefix.count > passwordLengthAt else { return nil }
        let passwordLength = Int(prefix[start + passwordLengthAt])
        guard passwordLength > 0 else { throw Failure(nil, "empty password") }
        return passwordLengthAt + 1 + passwordLength
    }

    /// `authenticationLength` as a reader uses it: bytes still to read (0: complete).
    public static func authenticationBytesNeeded(_ received: [UInt8]) throws(Failure) -> Int {
        guard let total = try authenticationLength(prefix: received[...]) else {
            // Before ULEN: the two-byte head; before PLEN: up to and including it.
            if received.count < 2 { return 2 - received.count }
            return 2 + Int(received[1]) + 1 - received.count
        }
        return total - received.count
    }

    public static func parseAuthentication(_ bytes: [UInt8]) throws(Failure) -> Credentials {
        guard let total = try authenticationLength(prefix: bytes[...]), total == bytes.count else {
            throw Failure(nil, "username/password message of \(bytes.count) bytes is cut short")
        }
        let usernameLength = Int(bytes[1])
        return Credentials(username: Array(bytes[2..<(2 + usernameLength)]), password: Array(bytes[(3 + usernameLength)...]))
    }

    public static func authenticationReply(success: Bool) -> [UInt8] { [1, success ? 0 : 1] }

    // MARK: request (client → server): VER CMD RSV ATYP DST.ADDR DST.PORT

    /// Every request is at least 8 bytes (a one-byte name); 5 tell its whole length.
    public static let requestHeadLength = 5

    public struct Request: Equatable, Sendable {
        public var command: UInt8
        public var destination: Destination
        public init(command: UInt8, destination: Destination) {
            self.command = command
            self.destination = destination
        }
    }

    public static func requestLength(prefix: ArraySlice<UInt8>) throws(Failure) -> Int? {
        guard prefix.count >= requestHeadLength else { return nil }
        let start = prefix.startIndex
        guard prefix[start] == version else { throw Failure(.generalFailure, "request version \(prefix[start]), not 5") }
        switch prefix[start + 3] {
        case 1: return 4 + 4 + 2
        case 4: return 4 + 16 + 2
        case 3:
            let nameLength = Int(prefix[start + 4])
            guard nameLength > 0 else { throw Failure(.hostUnreachable, "empty host name") }
            return 4 + 1 + nameLength + 2
        case let other: throw Failure(.addressTypeNotSupported, "address type \(other)")
        }
    }

    /// A whole request. Only its form is checked here; what the command is is the caller's
    /// business (it must still answer BIND and UDP ASSOCIATE with Command Not Supported).
    public static func parseRequest(_ bytes: [UInt8]) throws(Failure) -> Request {
        guard let total = try requestLength(prefix: bytes[...]), total == bytes.count else {
            throw Failure(.generalFailure, "request of \(bytes.count) bytes is cut short")
        }
        let port = UInt16(bytes[total - 2]) << 8 | UInt16(bytes[total - 1])
        let destination: Destination
        switch bytes[3] {
        case 1:
            destination = .address(SocketAddress(.v4(AddressBytes(bytes[4..<8])), port: port))
        case 4:
            destination = .address(SocketAddress(IPAddress(wire16: bytes[4..<20]), port: port))
        default:
            let name = bytes[5..<(total - 2)]
            guard HostName.isValid(name) else {
                throw Failure(.hostUnreachable, "host name \(PeerText.escaped(bytes: name)) is not a valid DNS name")
            }
            let text = String(decoding: name, as: UTF8.self)
            // curl --socks5-hostname sends an address it was given as a literal as a "name".
            if let literal = IPAddress(parsing: text) {
                destination = .address(SocketAddress(literal.normalized, port: port))
            } else {
                destination = .name(text, port: port)
            }
        }
        return Request(command: bytes[1], destination: destination)
    }

    /// The reply to a request. The bound address is 0.0.0.0:0: the server endpoint opens the
    /// real connection, so no local address of ours means anything to the client.
    public static func reply(_ code: Reply) -> [UInt8] {
        [version, code.rawValue, 0, 1, 0, 0, 0, 0, 0, 0]
    }
}
