import Crypto

/// The converter's check of a request's cookie: known key id, fresh timestamp, valid MAC
/// (constant-time), nonce not seen before. Shared by every event loop of a server.
public struct ConvertAuthenticator: Sendable {
    public var keys: [String: ClientKey]
    public var replayCache: ReplayCache
    /// When false, a request without a cookie is served (only if configured explicitly).
    public var requireCookie: Bool

    public init(keys: [ClientKey], replayCache: ReplayCache = ReplayCache(), requireCookie: Bool = true) {
        self.keys = Dictionary(keys.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.replayCache = replayCache
        self.requireCookie = requireCookie
    }

    /// Returns the authenticated key id (nil when unauthenticated requests are allowed and
    /// none was sent), or the error to send back.
    public func authenticate(_ decoded: DecodedConvertMessage, now: UInt64) throws(ConvertProtocolError) -> String? {
        guard let cookieBytes = decoded.message.cookie, let valueOffset = decoded.cookieValueOffset else {
            if requireCookie { throw ConvertProtocolError(.missingCookie, "request carries no Cookie TLV") }
            return nil
        }
        let cookie = try ConvertCookie(decoding: cookieBytes)
        guard let key = keys[cookie.keyID] else {
            throw ConvertProtocolError(.notAuthorized, "unknown key id \"\(cookie.keyID)\"")
        }
        let window = replayCache.window
        if cookie.timestamp + window < now || cookie.timestamp > now + window {
            let skew = Int64(bitPattern: cookie.timestamp &- now)
            throw ConvertProtocolError(.notAuthorized, "key id \"\(cookie.keyID)\": timestamp is \(skew) s from now, outside ±\(window) s")
        }
        var signed = decoded.raw
        let macStart = valueOffset + cookie.macOffset
        signed.replaceSubrange(macStart..<(macStart + ConvertCookie.macLength), with: repeatElement(0, count: ConvertCookie.macLength))
        guard HMAC<SHA256>.isValidAuthenticationCode(cookie.mac, authenticating: signed, using: key.key) else {
            throw ConvertProtocolError(.notAuthorized, "key id \"\(cookie.keyID)\": MAC does not match")
        }
        switch replayCache.admit(nonce: cookie.nonce, timestamp: cookie.timestamp, now: now) {
        case .fresh:
            return cookie.keyID
        case .replayed:
            throw ConvertProtocolError(.notAuthorized, "key id \"\(cookie.keyID)\": nonce was already used (replay)")
        case .belowFloor:
            throw ConvertProtocolError(.notAuthorized, "key id \"\(cookie.keyID)\": timestamp older than the replay cache keeps under load")
        }
    }
}
