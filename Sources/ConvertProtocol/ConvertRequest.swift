/// What the converter needs from a client's Convert message, after checking that it is a
/// request it can serve: exactly one destination, no error, no TCP options it cannot apply.
public struct ConvertRequest: Equatable, Sendable {
    public var destination: ConvertDestination
    public var wantsInfo: Bool

    public init(destination: ConvertDestination, wantsInfo: Bool = false) {
        self.destination = destination
        self.wantsInfo = wantsInfo
    }

    public init(_ message: ConvertMessage) throws(ConvertProtocolError) {
        if message.error != nil {
            throw ConvertProtocolError(.unsupportedMessage, "a request may not carry an Error TLV")
        }
        guard let (destination, options) = message.connect else {
            throw ConvertProtocolError(.malformedMessage, "request has no Connect TLV")
        }
        // NOP (1) is padding; anything else asks us to set a TCP option on the outgoing SYN,
        // which a user-space converter cannot do faithfully.
        if let kind = options.first(where: { $0 != 1 }) {
            throw ConvertProtocolError(.unsupportedTCPOption, "Connect TLV asks for TCP option kind \(kind)")
        }
        if destination.port == 0 {
            throw ConvertProtocolError(.malformedMessage, "Connect TLV destination port is 0")
        }
        self.destination = destination
        self.wantsInfo = message.tlvs.contains(.info)
    }
}

/// The client's reading of the converter's reply.
public enum ConvertReply: Equatable, Sendable {
    case accepted
    case refused(ConvertErrorCode, value: UInt8)

    public init(_ message: ConvertMessage) {
        if let (code, value) = message.error {
            self = .refused(code, value: value)
        } else {
            self = .accepted
        }
    }
}
