import Crypto

/// The authentication cookie carried in the Cookie TLV's opaque value.
///
/// Layout (after the TLV's two zero bytes), big-endian:
///   format (1) = 1 | key id length (1) = 1...64 | key id (UTF-8) | timestamp (8, Unix seconds)
///   | nonce (16) | MAC (32) | zero padding to the TLV's word boundary
/// MAC = HMAC-SHA256(client key, whole Convert message with the 32 MAC bytes set to zero),
/// so the destination and every other TLV are bound to it.
public struct ConvertCookie: Equatable, Sendable {
    public static let format: UInt8 = 1
    public static let nonceLength = 16
    public static let macLength = 32
    public static let maximumKeyIDLength = 64

    public var keyID: String
    public var timestamp: UInt64
    public var nonce: [UInt8]
    public var mac: [UInt8]

    public init(keyID: String, timestamp: UInt64, nonce: [UInt8], mac: [UInt8] = [UInt8](repeating: 0, count: 32)) {
        self.keyID = keyID
        self.timestamp = timestamp
        self.nonce = nonce
        self.mac = mac
    }

    /// Where the MAC sits inside the cookie's bytes.
    var macOffset: Int { 2 + keyID.utf8.count + 8 + Self.nonceLength }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = [Self.format, UInt8(keyID.utf8.count)]
        out.append(contentsOf: keyID.utf8)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: timestamp >> UInt64(shift))) }
        out.append(contentsOf: nonce)
        out.append(contentsOf: mac)
        return out
    }

    public init(decoding bytes: [UInt8]) throws(ConvertProtocolError) {
        guard bytes.count >= 2 else {
            throw ConvertProtocolError(.malformedMessage, "cookie is \(bytes.count) bytes, too short for its header")
        }
        guard bytes[0] == Self.format else {
            throw ConvertProtocolError(.notAuthorized, "cookie format \(bytes[0]) is unknown")
        }
        let idLength = Int(bytes[1])
        guard idLength >= 1 && idLength <= Self.maximumKeyIDLength else {
            throw ConvertProtocolError(.malformedMessage, "cookie key id length \(idLength) is outside 1...\(Self.maximumKeyIDLength)")
        }
        let needed = 2 + idLength + 8 + Self.nonceLength + Self.macLength
        guard bytes.count >= needed else {
            throw ConvertProtocolError(.malformedMessage, "cookie is \(bytes.count) bytes, its key id length implies \(needed)")
        }
        guard bytes.count - needed < 4, bytes[needed...].allSatisfy({ $0 == 0 }) else {
            throw ConvertProtocolError(.malformedMessage, "cookie has \(bytes.count - needed) trailing bytes that are not padding")
        }
        guard let keyID = String(validating: bytes[2..<(2 + idLength)], as: UTF8.self) else {
            throw ConvertProtocolError(.malformedMessage, "cookie key id is not UTF-8")
        }
        var offset = 2 + idLength
        var timestamp: UInt64 = 0
        for _ in 0..<8 {
            timestamp = timestamp << 8 | UInt64(bytes[offset])
            offset += 1
        }
        self.keyID = keyID
        self.timestamp = timestamp
        self.nonce = Array(bytes[offset..<(offset + Self.nonceLength)])
        self.mac = Array(bytes[(offset + Self.nonceLength)..<(offset + Self.nonceLength + Self.macLength)])
    }
}

/// A client's pre-shared key, known to both ends by its id.
public struct ClientKey: @unchecked Sendable {  // SymmetricKey is immutable
    public var id: String
    public var key: SymmetricKey

    public init(id: String, secret: [UInt8]) {
        self.id = id
        self.key = SymmetricKey(data: secret)
    }
}

extension ConvertMessage {
    /// A client request for `destination`, authenticated with `key`.
    public static func signedRequest(
        to destination: ConvertDestination, key: ClientKey, timestamp: UInt64,
        nonce: [UInt8]? = nil
    ) throws(ConvertProtocolError) -> [UInt8] {
        guard !key.id.isEmpty, key.id.utf8.count <= ConvertCookie.maximumKeyIDLength else {
            throw ConvertProtocolError(.malformedMessage, "key id must be 1...\(ConvertCookie.maximumKeyIDLength) bytes")
        }
        let nonce = nonce ?? (0..<ConvertCookie.nonceLength).map { _ in UInt8.random(in: .min ... .max) }
        let cookie = ConvertCookie(keyID: key.id, timestamp: timestamp, nonce: nonce)
        var raw = try ConvertMessage([.connect(destination, tcpOptions: []), .cookie(cookie.encoded())]).encoded()
        guard let valueOffset = try decode(raw).cookieValueOffset else {
            throw ConvertProtocolError(.malformedMessage, "encoded request lost its cookie")
        }
        let macStart = valueOffset + cookie.macOffset
        let mac = HMAC<SHA256>.authenticationCode(for: raw, using: key.key)
        raw.replaceSubrange(macStart..<(macStart + ConvertCookie.macLength), with: Array(mac))
        return raw
    }
}
