extension ConvertMessage {
    /// The message's bytes. Fails only when a TLV or the whole message would not fit
    /// the 8-bit word-length fields.
    public func encoded() throws(ConvertProtocolError) -> [UInt8] {
        var out: [UInt8] = [ConvertWire.version, 0, UInt8(ConvertWire.magic >> 8), UInt8(ConvertWire.magic & 0xff)]
        for tlv in tlvs {
            let start = out.count
            out.append(tlv.type.rawValue)
            out.append(0)  // length, patched below
            switch tlv {
            case .info:
                out.append(contentsOf: [0, 0])
            case .connect(let destination, let options):
                out.append(UInt8(destination.port >> 8))
                out.append(UInt8(destination.port & 0xff))
                out.append(contentsOf: destination.address)
                out.append(contentsOf: options)
            case .extendedTCPHeader(let options):
                out.append(contentsOf: [0, 0])
                out.append(contentsOf: options)
            case .supportedTCPExtensions(let kinds):
                out.append(contentsOf: [0, 0])
                out.append(contentsOf: kinds)
            case .cookie(let bytes):
                out.append(contentsOf: [0, 0])
                out.append(contentsOf: bytes)
            case .error(let code, let value):
                out.append(code.rawValue)
                out.append(value)
            }
            while out.count % 4 != 0 { out.append(0) }
            let words = (out.count - start) / 4
            guard words <= 255 else {
                throw ConvertProtocolError(.resourceExceeded, "\(tlv.type) TLV needs \(words) words, the maximum is 255")
            }
            out[start + 1] = UInt8(words)
        }
        let total = out.count / 4
        guard total <= 255 else {
            throw ConvertProtocolError(.resourceExceeded, "message needs \(total) words, the maximum is 255")
        }
        out[1] = UInt8(total)
        return out
    }
}
