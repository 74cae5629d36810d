/// Error codes of the Convert Error TLV (RFC 8803 §5.2.8, IANA "Convert Errors").
/// Ranges: 0-31 message validation, 32-63 client side, 64-95 converter side,
/// 96-127 caused by the destination server.
public enum ConvertErrorCode: UInt8, Sendable, CustomStringConvertible {
    case unsupportedVersion = 0
    case malformedMessage = 1
    case unsupportedMessage = 2
    case missingCookie = 3
    case notAuthorized = 32
    case unsupportedTCPOption = 33
    case resourceExceeded = 64
    case networkFailure = 65
    case connectionReset = 96
    case destinationUnreachable = 97

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
        }
    }
}

/// Why a Convert message was rejected: the code to send back and a precise reason for the log.
public struct ConvertProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: ConvertErrorCode
    public var reason: String

    public init(_ code: ConvertErrorCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code) (\(code.rawValue)): \(reason)" }
}
