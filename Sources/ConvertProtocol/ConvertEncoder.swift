import NetworkTypes

extension ConvertMessage {
    /// The message's bytes. Fails only when a TLV or the whole message would not fit
    /// the 8-bit word-length fields, or a host name is not one.
    public func encoded() throws(ConvertProtocolError) -> [UInt8] {
        // One allocation for the whole message (a client's request is about 112 bytes): grown by
        // appends, the array was reallocated several times per request, 4,000 instructions of
        // the client's 69,000 per connection.
        var out: [UInt8] = []
        out.reserveCapacity(256)
        Self.appendHeader(to: &out)
        for tlv in tlvs { try Self.append(tlv, to: &out) }
        try Self.finishMessage(&out, startingAt: 0)
        return out
    }

    /// The fixed header, its length byte 0 until `finishMessage`.
    static func appendHeader(to out: inout [UInt8]) {
        out.append(ConvertWire.version)
        out.append(0)
        out.append(UInt8(ConvertWire.magic >> 8))
        out.append(UInt8(ConvertWire.magic & 0xff))
    }

    /// Writes the message's length (in words) into the header at `start`.
    static func finishMessage(_ out: inout [UInt8], startingAt start: Int) throws(ConvertProtocolError) {
        let total = (out.count - start) / 4
        guard total <= 255 else {
            throw ConvertProtocolError(.resourceExceeded, "message needs \(total) words, the maximum is 255")
        }
        out[start + 1] = UInt8(total)
    }

    /// One TLV, padded to its word boundary, its length byte filled in.
    static func append(_ tlv: ConvertTLV, to out: inout [UInt8]) throws(ConvertProtocolError) {
        let start = out.count
        out.append(tlv.type.rawValue)
        out.append(0)  // length, patched below
        switch tlv {
        case .info:
            out.append(0)  // reserved (two bytes)
            out.append(0)
        case .connect(let destination, let options):
            append(port: destination.port, to: &out)
            destination.address.appendWire16(to: &out)
            out.append(contentsOf: options)
        case .extendedTCPHeader(let options):
            out.append(0)  // reserved (two bytes)
            out.append(0)
            out.append(contentsOf: options)
        case .supportedTCPExtensions(let kinds):
            out.append(0)  // reserved (two bytes)
            out.append(0)
            out.append(contentsOf: kinds)
        case .cookie(let bytes):
            out.append(0)  // reserved (two bytes)
            out.append(0)
            out.append(contentsOf: bytes)
        case .error(let code, let value):
            out.append(code.rawValue)
            if value.isEmpty { out.append(0) } else { out.append(contentsOf: value) }
        case .destinationName(let name, let port):
            guard HostName.isValid(name.utf8) else {
                throw ConvertProtocolError(.malformedMessage, "\"\(PeerText.escaped(name))\" is not a host name")
            }
            append(port: port, to: &out)
            out.append(UInt8(name.utf8.count))
            out.append(contentsOf: name.utf8)
        case .originalSource(let address):
            append(port: address.port, to: &out)
            address.address.appendWire16(to: &out)
        }
        try finishTLV(&out, startingAt: start, type: tlv.type)
    }

    /// Pads the TLV that starts at `start` to its word boundary and writes its length.
    static func finishTLV(_ out: inout [UInt8], startingAt start: Int, type: ConvertTLVType) throws(ConvertProtocolError) {
        while out.count % 4 != 0 { out.append(0) }
        let words = (out.count - start) / 4
        guard words <= 255 else {
            throw ConvertProtocolError(.resourceExceeded, "\(type) TLV needs \(words) words, the maximum is 255")
        }
        out[start + 1] = UInt8(words)
    }

    private static func append(port: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(port >> 8))
        out.append(UInt8(port & 0xff))
    }
}
