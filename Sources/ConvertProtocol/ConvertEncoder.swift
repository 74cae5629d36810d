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
        out += [ConvertWire.version, 0, UInt8(ConvertWire.magic >> 8), UInt8(ConvertWire.magic & 0xff)]
        for tlv in tlvs {
            let start = out.count
            out.append(tlv.type.rawValue)
            out.append(0)  // length, patched below
            switch tlv {
            case .info:
                out.append(0)  // reserved (two bytes)
                out.append(0)
            case .connect(let destination, let options):
                Self.append(port: destination.port, to: &out)
                out.append(contentsOf: destination.address.wire16)
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
                out.append(contentsOf: value.isEmpty ? [0] : value)
            case .destinationName(let name, let port):
                let bytes = Array(name.utf8)
                guard HostName.isValid(bytes) else {
                    throw ConvertProtocolError(.malformedMessage, "\"\(PeerText.escaped(name))\" is not a host name")
                }
                Self.append(port: port, to: &out)
                out.append(UInt8(bytes.count))
                out.append(contentsOf: bytes)
            case .originalSource(let address):
                Self.append(port: address.port, to: &out)
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

    private static func append(port: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(port >> 8))
        out.append(UInt8(port & 0xff))
    }
}
