import NetworkTypes

/// What the converter needs from a client's Convert message, after checking that it is a
/// request it can serve: at most one destination (an address or a name), no error, no TCP
/// options it cannot apply; or an Info TLV alone, which asks only for the capabilities.
public struct ConvertRequest: Equatable, Sendable {
    /// nil for an Info-only request.
    public var destination: Destination?
    public var wantsInfo: Bool
    /// The Connect TLV listed the Multipath TCP option (kind 30): dial the destination with MPTCP.
    public var wantsMPTCP: Bool
    /// The LAN host behind the client (Original Source TLV), for PROXY v2 towards the destination.
    public var originalSource: SocketAddress?

    public init(destination: Destination?, wantsInfo: Bool = false, wantsMPTCP: Bool = false, originalSource: SocketAddress? = nil) {
        self.destination = destination
        self.wantsInfo = wantsInfo
        self.wantsMPTCP = wantsMPTCP
        self.originalSource = originalSource
    }

    public init(_ message: ConvertMessage) throws(ConvertProtocolError) {
        if message.error != nil {
            throw ConvertProtocolError(.unsupportedMessage, "a request may not carry an Error TLV")
        }
        for tlv in message.tlvs {
            switch tlv.type {
            case .extendedTCPHeader, .supportedTCPExtensions:
                throw ConvertProtocolError(.unsupportedMessage, "a request may not carry a \(tlv.type) TLV")
            default: continue
            }
        }
        let wantsInfo = message.tlvs.contains(.info)
        var wantsMPTCP = false
        let destination: Destination?
        switch (message.connect, message.destinationName) {
        case (.some, .some):
            throw ConvertProtocolError(.malformedMessage, "request carries both a Connect and a Destination Name TLV")
        case (let (address, options)?, nil):
            if address.port == 0 {
                throw ConvertProtocolError(.malformedMessage, "Connect TLV destination port is 0")
            }
            wantsMPTCP = try Self.checkOptions(options)
            destination = .address(address)
        case (nil, let (name, port)?):
            if port == 0 {
                throw ConvertProtocolError(.malformedMessage, "Destination Name TLV port is 0")
            }
            destination = .name(name, port: port)
        case (nil, nil):
            guard wantsInfo else {
                throw ConvertProtocolError(.malformedMessage, "request has neither a Connect TLV nor an Info TLV")
            }
            destination = nil
        }
        self.destination = destination
        self.wantsInfo = wantsInfo
        self.wantsMPTCP = wantsMPTCP
        self.originalSource = message.originalSource
    }

    /// Walks the Connect TLV's TCP options (kind, length ≥ 2, value). RFC 8803 §6: kinds 0-3
    /// and 5 are ignored; Multipath TCP (30) without content asks for MPTCP towards the
    /// destination; any other option cannot be set faithfully from user space and is
    /// answered with Unsupported TCP Option listing its kinds. Returns whether MPTCP was asked.
    static func checkOptions(_ options: [UInt8]) throws(ConvertProtocolError) -> Bool {
        var index = 0
        var unsupported: [UInt8] = []
        var mptcp = false
        while index < options.count {
            let kind = options[index]
            switch kind {
            case 0:
                // End of option list: only padding may follow.
                guard options[index...].allSatisfy({ $0 == 0 }) else {
                    throw ConvertProtocolError(.malformedMessage, "Connect TLV TCP options continue after End of Option List")
                }
                index = options.count
                continue
            case 1:
                index += 1  // NOP: the RFC forbids it here; harmless padding, so skipped.
                continue
            default:
                break
            }
            guard options.count - index >= 2 else {
                throw ConvertProtocolError(.malformedMessage, "Connect TLV TCP option kind \(kind) has no length byte")
            }
            let length = Int(options[index + 1])
            guard length >= 2, length <= options.count - index else {
                throw ConvertProtocolError(.malformedMessage, "Connect TLV TCP option kind \(kind) has length \(length), \(options.count - index) bytes remain")
            }
            switch kind {
            case 2, 3, 5: break          // MSS, window scale, SACK: MUST be ignored
            case 30 where length == 2: mptcp = true
            default: if !unsupported.contains(kind) { unsupported.append(kind) }
            }
            index += length
        }
        if !unsupported.isEmpty {
            throw ConvertProtocolError(.unsupportedTCPOption, "Connect TLV asks for TCP option kind\(unsupported.count == 1 ? "" : "s") \(unsupported.map(String.init).joined(separator: ", "))",
                                       value: unsupported)
        }
        return mptcp
    }
}

/// The client's reading of the converter's reply.
public enum ConvertReply: Equatable, Sendable {
    case accepted(supportedExtensions: [UInt8]?)
    case refused(ConvertErrorCode, value: [UInt8])

    public init(_ message: ConvertMessage) {
        if let (code, value) = message.error {
            self = .refused(code, value: value)
        } else {
            self = .accepted(supportedExtensions: message.supportedExtensions)
        }
    }
}
