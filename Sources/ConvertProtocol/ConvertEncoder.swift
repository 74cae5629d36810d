import NetworkTypes

extension ConvertMessage {
    /// The message's bytes. Fails only when a TLV or the whole message would not fit
    /// the 8-bit word-length fields, or a host name is not one.
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
                out.append(contentsOf: Self.port(destination.port))
                out.append(contentsOf: destination.address.wire16)
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
                out.append(contentsOf: value.isEmpty ? [0] : value)
            case .destinationName(let name, let port):
                let bytes = Array(name.utf8)
                guard HostName.isValid(bytes) else {
                    throw ConvertProtocolError(.malformedMessage, "\"\(PeerText.escaped(name))\" is not a host name")
                }
                out.append(contentsOf: Self.port(port))
                out.append(UInt8(bytes.count))
                out.append(contentsOf: bytes)
            case .originalSource(let address):
                out.append(contentsOf: Self.port(address.port))
                out.append(contentsOf: address.address.wire16)
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

    private static func port(_ port: UInt16) -> [UInt8] { [UInt8(port >> 8), UInt8(port & 0xff)] }
}
