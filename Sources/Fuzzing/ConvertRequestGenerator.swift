import ConvertProtocol
import Crypto
import NetworkTypes

/// Builds Convert requests that are well-formed in structure but extreme in their values:
/// timestamps at 0, around the freshness window and near 2^64; key-id lengths 0-255 that may
/// disagree with the bytes that follow; every TLV length byte; names of every length and
/// byte; option lists; duplicated and unknown TLVs; a total length that lies. A good share of
/// them carry a correct MAC for the known key, so freshness, replay and destination checks
/// are reached, not only the parser.
public struct ConvertRequestGenerator {
    public let key: ClientKey
    public let now: UInt64

    public init(key: ClientKey, now: UInt64) {
        self.key = key
        self.now = now
    }

    private struct Piece {
        var bytes: [UInt8]
        /// Where the cookie's MAC starts inside `bytes`, when this piece is a cookie to sign.
        var macAt: Int?
    }

    public func make(_ c: inout some FuzzChoices) -> [UInt8] {
        var pieces: [Piece] = []
        if c.chance(60) {
            // The shape of a real request: one destination, maybe Info and Original Source.
            pieces.append(piece(c.chance(70) ? 10 : 192, &c))
            if c.chance(30) { pieces.append(piece(1, &c)) }
            if c.chance(30) { pieces.append(piece(193, &c)) }
            if c.chance(20) { pieces.swapAt(0, pieces.count - 1) }
        } else {
            for _ in 0..<(1 + c.below(4)) {
                pieces.append(piece(c.chance(92) ? c.pick([1, 10, 10, 10, 20, 21, 30, 192, 192, 193]) : c.byte(), &c))
            }
        }
        if c.chance(10), let first = pieces.first { pieces.append(first) }       // a duplicate TLV
        if c.chance(70) { pieces.append(cookie(&c)) }                             // usually signed last
        var body: [UInt8] = []
        var macAt: Int?
        for piece in pieces {
            if let at = piece.macAt { macAt = 4 + body.count + at }
            body += piece.bytes
        }
        var message: [UInt8] = [1, 0, 0x22, 0x63] + body
        let words = message.count / 4
        message[1] = c.chance(90) ? UInt8(truncatingIfNeeded: words) : c.byte()
        if c.chance(3) { message[0] = c.pick([0, 2, 255]) }
        if c.chance(3) { message[2] = c.byte() }
        if let macAt, macAt + 32 <= message.count, message[1] == UInt8(truncatingIfNeeded: words), c.chance(85) {
            let mac = HMAC<SHA256>.authenticationCode(for: message, using: key.key)
            message.replaceSubrange(macAt..<(macAt + 32), with: Array(mac))
        }
        return message
    }

    /// A TLV with its length byte usually right and its value built for its type.
    private func piece(_ type: UInt8, _ c: inout some FuzzChoices) -> Piece {
        var value: [UInt8]
        switch type {
        case 1:
            value = c.chance(90) ? [0, 0] : c.bytes(c.below(12))
        case 10:
            value = portBytes(&c) + address16(&c) + (c.chance(60) ? [] : options(&c))
        case 192:
            let name = hostName(&c)
            let declared = c.chance(85) ? UInt8(truncatingIfNeeded: name.count) : c.byte()
            value = portBytes(&c) + [declared] + name
        case 193:
            value = portBytes(&c) + address16(&c)
        case 30:
            value = [c.byte()] + c.bytes(c.below(8))
        default:
            value = c.bytes(c.below(40))
        }
        return Piece(bytes: tlv(type, value, &c), macAt: nil)
    }

    /// A Cookie TLV in our layout with extreme fields; its MAC offset is reported for signing.
    private func cookie(_ c: inout some FuzzChoices) -> Piece {
        let id = c.chance(80) ? Array(key.id.utf8) : c.bytes(c.below(80))
        let declaredLength: UInt8 = c.chance(85) ? UInt8(truncatingIfNeeded: id.count) : c.byte()
        let format: UInt8 = c.chance(95) ? ConvertCookie.format : c.byte()
        var value: [UInt8] = [0, 0, format, declaredLength] + id
        value += bigEndian(timestamp(&c))
        value += c.bytes(ConvertCookie.nonceLength)
        let macAt = 2 + value.count
        value += [UInt8](repeating: 0, count: ConvertCookie.macLength)
        if c.chance(5) { value += c.bytes(c.below(6)) }     // trailing junk
        return Piece(bytes: tlv(22, value, &c), macAt: macAt)
    }

    private func timestamp(_ c: inout some FuzzChoices) -> UInt64 {
        switch c.below(12) {
        case 0: return 0
        case 1: return UInt64.max
        case 2: return UInt64.max &- UInt64(c.byte())
        case 3: return 1 << 63
        case 4: return now &- 60_000
        case 5: return now &- 60_001
        case 6: return now &+ 5_000
        case 7: return now &+ 5_001
        case 8: return c.uint64()
        default: return now &- UInt64(c.below(4000))
        }
    }

    private func tlv(_ type: UInt8, _ value: [UInt8], _ c: inout some FuzzChoices) -> [UInt8] {
        var bytes = [type, 0] + value
        while bytes.count % 4 != 0 { bytes.append(0) }
        bytes[1] = c.chance(90) ? UInt8(truncatingIfNeeded: bytes.count / 4) : c.byte()
        return bytes
    }

    private func portBytes(_ c: inout some FuzzChoices) -> [UInt8] {
        let port: UInt16 = c.chance(90) ? c.pick([1, 80, 443, 65535]) : c.pick([0, c.uint16()])
        return [UInt8(port >> 8), UInt8(port & 0xff)]
    }

    private func address16(_ c: inout some FuzzChoices) -> [UInt8] {
        switch c.below(6) {
        case 0: return IPAddress.v4([127, 0, 0, 1]).wire16
        case 1: return IPAddress.v4([169, 254, 169, 254]).wire16
        case 2: return IPAddress.v4([10, c.byte(), c.byte(), c.byte()]).wire16
        case 3: return [0xfe, 0x80] + c.bytes(14)
        case 4: return [UInt8](repeating: 0, count: 15) + [1]
        default: return c.bytes(16)
        }
    }

    private func options(_ c: inout some FuzzChoices) -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<c.below(5) {
            let kind: UInt8 = c.pick([0, 1, 2, 3, 4, 5, 8, 30, 34, c.byte()])
            let length: UInt8 = c.chance(80) ? c.pick([2, 3, 4, 10]) : c.byte()
            out += [kind, length] + c.bytes(max(0, Int(length) - 2) % 12)
        }
        return out
    }

    private func hostName(_ c: inout some FuzzChoices) -> [UInt8] {
        switch c.below(5) {
        case 0: return Array("origin.example".utf8)
        case 1: return [UInt8](repeating: UInt8(ascii: "a"), count: c.below(300))
        case 2: return Array("a..b".utf8)
        case 3: return c.bytes(c.below(64))
        default:
            let labels = (0..<(1 + c.below(6))).map { _ in String(repeating: "x", count: 1 + c.below(70)) }
            return Array(labels.joined(separator: ".").utf8)
        }
    }

    private func bigEndian(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64(56 - 8 * $0)) }
    }
}
