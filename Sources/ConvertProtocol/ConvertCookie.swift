import Crypto
import NetworkTypes

/// The authentication cookie carried in the Cookie TLV's opaque value.
///
/// Layout (after the TLV's two zero bytes), big-endian:
///   format (1) = 1 | key id length (1) = 1...64 | key id (UTF-8) | timestamp (8, Unix milliseconds)
///   | nonce (16) | MAC (32) | zero padding to the TLV's word boundary
/// MAC = HMAC-SHA256(client key, whole Convert message with the 32 MAC bytes set to zero),
/// so the destination and every other TLV are bound to it.
public struct ConvertCookie: Equatable, Sendable {
    public static let format: UInt8 = 1
    public static let nonceLength = 16
    public static let macLength = 32
    public static let maximumKeyIDLength = 64

    public var keyID: String
    /// Milliseconds since the Unix epoch: fine enough that a server's start instant is a precise
    /// replay floor, and that evicting one cookie raises a key's floor by no more than a moment.
    public var timestamp: UInt64
    public var nonce: [UInt8]
    public var mac: [UInt8]

    public init(keyID: String, timestamp: UInt64, nonce: [UInt8], mac: [UInt8] = [UInt8](repeating: 0, count: 32)) {
        self.keyID = keyID
        self.timestamp = timestamp
        self.nonce = nonce
        self.mac = mac
    }

    /// 16 random bytes from the system's generator in two draws (one getrandom(2) each), not
    /// sixteen: this runs once per connection.
    public static func freshNonce() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        let (high, low) = (generator.next(), generator.next())
        return withUnsafeBytes(of: (high, low)) { Array($0) }
    }

    /// Where the MAC sits inside the cookie's bytes.
    var macOffset: Int { 2 + keyID.utf8.count + 8 + Self.nonceLength }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(2 + keyID.utf8.count + 8 + nonce.count + mac.count)
        Self.append(keyID: keyID, timestamp: timestamp, nonce: nonce, mac: mac, to: &out)
        return out
    }

    /// The cookie's layout (see the type), appended to `out`: `encoded` and the signed request,
    /// which writes it straight into the message.
    static func append(keyID: String, timestamp: UInt64, nonce: [UInt8], mac: some Collection<UInt8>, to out: inout [UInt8]) {
        out.append(format)
        out.append(UInt8(keyID.utf8.count))
        out.append(contentsOf: keyID.utf8)
        for byte in 0..<8 { out.append(UInt8(truncatingIfNeeded: timestamp >> UInt64(56 - 8 * byte))) }
        out.append(contentsOf: nonce)
        out.append(contentsOf: mac)
    }

    /// Reads a cookie. Its content is opaque to RFC 8803, so a cookie that does not have our
    /// layout is an invalid cookie, answered with Not Authorized (§5.2.6), not Malformed Message.
    public init(decoding bytes: [UInt8]) throws(ConvertProtocolError) {
        guard bytes.count >= 2 else {
            throw ConvertProtocolError(.notAuthorized, "cookie is \(bytes.count) bytes, too short for its header")
        }
        guard bytes[0] == Self.format else {
            throw ConvertProtocolError(.notAuthorized, "cookie format \(bytes[0]) is unknown")
        }
        let idLength = Int(bytes[1])
        guard idLength >= 1 && idLength <= Self.maximumKeyIDLength else {
            throw ConvertProtocolError(.notAuthorized, "cookie key id length \(idLength) is outside 1...\(Self.maximumKeyIDLength)")
        }
        let needed = 2 + idLength + 8 + Self.nonceLength + Self.macLength
        guard bytes.count >= needed else {
            throw ConvertProtocolError(.notAuthorized, "cookie is \(bytes.count) bytes, its key id length implies \(needed)")
        }
        guard bytes.count - needed < 4, bytes[needed...].allSatisfy({ $0 == 0 }) else {
            throw ConvertProtocolError(.notAuthorized, "cookie has \(bytes.count - needed) trailing bytes that are not padding")
        }
        let idBytes = bytes[2..<(2 + idLength)]
        guard let keyID = String(validating: idBytes, as: UTF8.self) else {
            throw ConvertProtocolError(.notAuthorized, "cookie key id \"\(PeerText.escaped(bytes: idBytes))\" is not UTF-8")
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
public struct ClientKey: @unchecked Sendable {  // SymmetricKey and the HMAC state are values, never shared mutably
    public let id: String
    public let key: SymmetricKey
    /// HMAC-SHA256 with this key's pads already hashed (see PreparedHMAC).
    public let hmac: PreparedHMAC

    public init(id: String, secret: [UInt8]) {
        self.id = id
        self.key = SymmetricKey(data: secret)
        self.hmac = PreparedHMAC(key: key)
    }
}

extension ConvertMessage {
    /// A client request for `destination`, authenticated with `key`.
    public static func signedRequest(
        to destination: SocketAddress, key: ClientKey, timestamp: UInt64, nonce: [UInt8]? = nil
    ) throws(ConvertProtocolError) -> [UInt8] {
        try signedRequest([.connect(destination, tcpOptions: [])], key: key, timestamp: timestamp, nonce: nonce)
    }

    /// A client request made of `tlvs` followed by the Cookie TLV, whose MAC covers every byte;
    /// `earlyData` (the LAN host's first bytes, not part of the message) follows it in the same
    /// array. Written in one pass into one array, the MAC computed and written in place: built
    /// from a cookie value, an encoded cookie, a TLV list and a MAC array, a request cost ten
    /// allocations and 6,500 instructions beside its hashing (callgrind, B3, the client).
    public static func signedRequest(
        _ tlvs: [ConvertTLV], key: ClientKey, timestamp: UInt64, nonce: [UInt8]? = nil, earlyData: [UInt8] = []
    ) throws(ConvertProtocolError) -> [UInt8] {
        let keyID = key.id.utf8
        guard !keyID.isEmpty, keyID.count <= ConvertCookie.maximumKeyIDLength else {
            throw ConvertProtocolError(.malformedMessage, "key id must be 1...\(ConvertCookie.maximumKeyIDLength) bytes")
        }
        if let nonce, nonce.count != ConvertCookie.nonceLength {
            throw ConvertProtocolError(.malformedMessage, "a nonce is \(ConvertCookie.nonceLength) bytes, not \(nonce.count)")
        }
        var out: [UInt8] = []
        out.reserveCapacity(256 + earlyData.count)
        appendHeader(to: &out)
        for tlv in tlvs { try append(tlv, to: &out) }
        // The Cookie TLV: type, length, two reserved bytes, then the cookie with a zero MAC.
        let cookieStart = out.count
        out.append(ConvertTLVType.cookie.rawValue)
        out.append(0)
        out.append(0)
        out.append(0)
        ConvertCookie.append(keyID: key.id, timestamp: timestamp, nonce: nonce ?? ConvertCookie.freshNonce(),
                             mac: repeatElement(0, count: ConvertCookie.macLength), to: &out)
        let macStart = out.count - ConvertCookie.macLength
        try finishTLV(&out, startingAt: cookieStart, type: .cookie)
        try finishMessage(&out, startingAt: 0)
        out.withUnsafeMutableBytes { bytes in
            key.hmac.withAuthenticationCode(for: UnsafeRawBufferPointer(bytes)) { mac in
                UnsafeMutableRawBufferPointer(rebasing: bytes[macStart..<(macStart + ConvertCookie.macLength)]).copyMemory(from: mac)
            }
        }
        out.append(contentsOf: earlyData)
        return out
    }
}
