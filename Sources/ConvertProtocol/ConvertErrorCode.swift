/// Error codes of the Convert Error TLV (RFC 8803 §5.2.8, IANA "Convert Errors").
/// Ranges: 0-31 message validation, 32-63 client side, 64-95 converter side, 96-127 caused by
/// the destination server, 192-255 private use (ours: see docs/protocol.md).
///
/// A struct rather than an enum: a reply may carry a code this build does not know (a newer
/// server, another implementation's private code); it is still an error, and the client must
/// still reset its connection, so decoding never fails on the code alone.
public struct ConvertErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let unsupportedVersion = ConvertErrorCode(rawValue: 0)
    public static let malformedMessage = ConvertErrorCode(rawValue: 1)
    public static let unsupportedMessage = ConvertErrorCode(rawValue: 2)
    public static let missingCookie = ConvertErrorCode(rawValue: 3)
    public static let notAuthorized = ConvertErrorCode(rawValue: 32)
    public static let unsupportedTCPOption = ConvertErrorCode(rawValue: 33)
    public static let resourceExceeded = ConvertErrorCode(rawValue: 64)
    public static let networkFailure = ConvertErrorCode(rawValue: 65)
    public static let connectionReset = ConvertErrorCode(rawValue: 96)
    public static let destinationUnreachable = ConvertErrorCode(rawValue: 97)
    /// Private use: the destination host name could not be resolved by the converter.
    public static let nameNotResolved = ConvertErrorCode(rawValue: 192)
    /// Private use: the destination did not answer the converter's SYN within its deadline
    /// (97 carries an ICMP code by the RFC, and a timeout has none).
    public static let destinationTimedOut = ConvertErrorCode(rawValue: 193)

    public var description: String {
        switch self {
        case .unsupportedVersion: return "Unsupported Version"
        case .malformedMessage: return "Malformed Message"
        case .unsupportedMessage: return "Unsupported Message"
        case .missingCookie: return "Missing Cookie"
        case .notAuthorized: return "Not Authorized"
        case .unsupportedTCPOption: return "Unsupported TCP Option"
        case .resourceExceeded: return "Resource Exceeded"
        case .networkFailure: return "Network Failure"
        case .connectionReset: return "Connection Reset"
        case .destinationUnreachable: return "Destination Unreachable"
        case .nameNotResolved: return "Name Not Resolved"
        case .destinationTimedOut: return "Destination Timed Out"
        default: return "error code \(rawValue)"
        }
    }

    /// RFC 8803: the Value of Malformed Message and Unsupported Message echoes the message.
    public var echoesMessage: Bool { self == .malformedMessage || self == .unsupportedMessage }
}

/// Why a Convert message was rejected: the code to send back, the Error TLV's value bytes
/// where the RFC gives them one, and a precise reason for the log (peer text already escaped).
public struct ConvertProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ConvertErrorCode
    public var reason: String
    /// Value bytes for the Error TLV (e.g. the unsupported option kinds); empty means one
    /// zero byte, the RFC's default.
    public var value: [UInt8]
    /// The peer said so in an Error TLV (a server's refusal), rather than this end finding it.
    public var reportedByPeer: Bool

    public init(_ code: ConvertErrorCode, _ reason: String, value: [UInt8] = [], reportedByPeer: Bool = false) {
        self.code = code
        self.reason = reason
        self.value = value
        self.reportedByPeer = reportedByPeer
    }

    public var description: String { "\(code) (\(code.rawValue)): \(reason)" }
}
