import NetworkTypes

/// A decoded Convert message with what authentication needs from the raw bytes.
public struct DecodedConvertMessage: Sendable {
    public var message: ConvertMessage
    /// The exact bytes received; the cookie MAC covers them.
    public var raw: [UInt8]
    /// Offset in `raw` of the Cookie TLV's opaque value (after its two zero bytes), if present.
    public var cookieValueOffset: Int?
}

extension ConvertMessage {
    /// How many bytes the whole message has, judged from its first bytes; nil while fewer than
    /// the 4-byte fixed header are known. Rejects a bad version, magic or length at once, so a
    /// peer that is not speaking Convert is turned away before it sends more.
    public static func expectedLength(prefix: some Collection<UInt8>) throws(ConvertProtocolError) -> Int? {
        var bytes = prefix.makeIterator()
        guard let version = bytes.next() else { return nil }
        guard version == ConvertWire.version else {
            throw ConvertProtocolError(.unsupportedVersion, "version \(version), this converter speaks version \(ConvertWire.version)",
                                       value: [ConvertWire.version])
        }
        guard let words = bytes.next(), let magicHigh = bytes.next(), let magicLow = bytes.next() else { return nil }
        let magic = UInt16(magicHigh) << 8 | UInt16(magicLow)
        guard magic == ConvertWire.magic else {
            throw ConvertProtocolError(.malformedMessage, "magic 0x\(String(magic, radix: 16)) is not 0x2263")
        }
        guard words >= 1 else {
            throw ConvertProtocolError(.malformedMessage, "total length 0 words is shorter than the fixed header")
        }
        // At most 255 words: every later offset is bounded by 1020 bytes.
        return Int(words) * 4
    }

    /// Decodes exactly one whole message. Every malformation is reported with the code the
    /// RFC asks for and a reason that says what was wrong and where. All offsets are bounded
    /// by the 1020-byte maximum and checked before use, so no input can trap.
    public static func decode(_ raw: [UInt8]) throws(ConvertProtocolError) -> DecodedConvertMessage {
        guard raw.count >= ConvertWire.headerLength else {
            throw ConvertProtocolError(.malformedMessage, "truncated fixed header: \(raw.count) of 4 bytes")
        }
        guard let total = try expectedLength(prefix: raw) else {
            throw ConvertProtocolError(.malformedMessage, "truncated fixed header")
        }
        guard raw.count == total else {
            throw ConvertProtocolError(.malformedMessage, "total length says \(total) bytes, got \(raw.count)")
        }
        var tlvs: [ConvertTLV] = []
        tlvs.reserveCapacity(4)  // a request has two or three, a reply one or two
        // TLV types seen, one bit each (a Set<UInt8> cost an allocation per message).
        var seen = (low: UInt128(0), high: UInt128(0))
        var cookieValueOffset: Int?
        var offset = ConvertWire.headerLength
        while offset < total {
            guard total - offset >= 4 else {
                throw ConvertProtocolError(.malformedMessage, "truncated TLV header at byte \(offset)")
            }
            let typeByte = raw[offset]
            let length = Int(raw[offset + 1]) * 4
            guard length >= 4 else {
                throw ConvertProtocolError(.malformedMessage, "TLV type \(typeByte) at byte \(offset) has length 0")
            }
            guard length <= total - offset else {
                throw ConvertProtocolError(.malformedMessage, "TLV type \(typeByte) at byte \(offset) runs \(length - (total - offset)) bytes past the message end")
            }
            guard let type = ConvertTLVType(rawValue: typeByte) else {
                throw ConvertProtocolError(.unsupportedMessage, "unknown TLV type \(typeByte) at byte \(offset)")
            }
            let bit = UInt128(1) << (typeByte & 127)
            let alreadySeen = typeByte < 128 ? seen.low & bit != 0 : seen.high & bit != 0
            if typeByte < 128 { seen.low |= bit } else { seen.high |= bit }
            guard !alreadySeen else {
                throw ConvertProtocolError(.malformedMessage, "duplicate \(type) TLV at byte \(offset)")
            }
            // The TLV's bytes after Type and Length: at least 2, since length >= 4.
            let value = raw[(offset + 2)..<(offset + length)]
            let start = value.startIndex
            switch type {
            case .info:
                guard length == 4 else {
                    throw ConvertProtocolError(.malformedMessage, "Info TLV is \(length / 4) words, must be 1")
                }
                tlvs.append(.info)
            case .connect:
                guard length >= 20 else {
                    throw ConvertProtocolError(.malformedMessage, "Connect TLV is \(length / 4) words, the minimum is 5")
                }
                let port = UInt16(value[start]) << 8 | UInt16(value[start + 1])
                let address = IPAddress(wire16: value[(start + 2)..<(start + 18)])
                let options = trimmingZeroPadding(value[(start + 18)...])
                tlvs.append(.connect(SocketAddress(address, port: port), tcpOptions: options))
            case .extendedTCPHeader:
                tlvs.append(.extendedTCPHeader(trimmingZeroPadding(value.dropFirst(2))))
            case .supportedTCPExtensions:
                tlvs.append(.supportedTCPExtensions(trimmingZeroPadding(value.dropFirst(2))))
            case .cookie:
                guard length >= 8 else {
                    throw ConvertProtocolError(.malformedMessage, "Cookie TLV is \(length / 4) words, carries no cookie")
                }
                cookieValueOffset = offset + 4
                tlvs.append(.cookie(Array(value.dropFirst(2))))
            case .error:
                tlvs.append(.error(ConvertErrorCode(rawValue: value[start]), value: Array(value.dropFirst())))
            case .destinationName:
                // port (2), name length (1), name, zero padding.
                let port = UInt16(value[start]) << 8 | UInt16(value[start + 1])
                guard value.count >= 3 else {
                    throw ConvertProtocolError(.malformedMessage, "Destination Name TLV at byte \(offset) has no name length")
                }
                let nameLength = Int(value[start + 2])
                guard nameLength <= value.count - 3 else {
                    throw ConvertProtocolError(.malformedMessage, "Destination Name TLV says \(nameLength) name bytes, has \(value.count - 3)")
                }
                let nameBytes = value[(start + 3)..<(start + 3 + nameLength)]
                guard value[(start + 3 + nameLength)...].allSatisfy({ $0 == 0 }), value.count - 3 - nameLength < 4 else {
                    throw ConvertProtocolError(.malformedMessage, "Destination Name TLV has bytes after its name that are not padding")
                }
                guard HostName.isValid(nameBytes) else {
                    throw ConvertProtocolError(.malformedMessage, "Destination Name \"\(PeerText.escaped(bytes: nameBytes))\" is not a host name")
                }
                tlvs.append(.destinationName(String(decoding: nameBytes, as: UTF8.self), port: port))
            case .originalSource:
                guard length == 20 else {
                    throw ConvertProtocolError(.malformedMessage, "Original Source TLV is \(length / 4) words, must be 5")
                }
                let port = UInt16(value[start]) << 8 | UInt16(value[start + 1])
                tlvs.append(.originalSource(SocketAddress(IPAddress(wire16: value[(start + 2)..<(start + 18)]), port: port)))
            }
            offset += length
        }
        return DecodedConvertMessage(message: ConvertMessage(tlvs), raw: raw, cookieValueOffset: cookieValueOffset)
    }

    /// TCP options and extension lists are padded with zero bytes (EOL) to the TLV's word boundary.
    private static func trimmingZeroPadding(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var end = bytes.endIndex
        while end > bytes.startIndex && bytes[end - 1] == 0 { end -= 1 }
        return Array(bytes[bytes.startIndex..<end])
    }
}
