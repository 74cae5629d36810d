import Crypto
import NetworkTypes

/// The converter's check of a request's cookie: known key id, fresh timestamp, valid MAC
/// (constant-time), nonce not seen before — in that order, so no work beyond a dictionary
/// lookup and two comparisons is spent before the MAC proves the sender holds the key.
/// Shared by every event loop of a server; each key has its own replay cache (ReplayCache).
public struct ConvertAuthenticator: Sendable {
    public struct Settings: Sendable, Equatable {
        public var freshness = Freshness()
        /// Nonces kept across all keys; each key gets an equal share, at least `minimumShare`.
        public var replayCapacity = 1 << 17
        public var minimumShare = 1024
        /// When false, a request without a cookie is served (only if configured explicitly).
        public var requireCookie = true
        public init() {}
    }

    private struct Entry: Sendable {
        var key: ClientKey
        var replay: ReplayCache
    }

    public let settings: Settings
    private let entries: [String: Entry]

    /// - Parameters:
    ///   - floor: cookies stamped at or before this Unix millisecond are refused by every key's
    ///     cache: the process's start time, so a restart does not reopen replays.
    ///   - previous: on reload, keys that stay keep their replay caches (and floors).
    public init(keys: [ClientKey], settings: Settings = Settings(), floor: UInt64, previous: ConvertAuthenticator? = nil) {
        self.settings = settings
        let share = max(settings.minimumShare, settings.replayCapacity / max(1, keys.count))
        var entries: [String: Entry] = [:]
        for key in keys where entries[key.id] == nil {
            let cache = previous?.entries[key.id]?.replay ?? ReplayCache(capacity: share, floor: floor)
            entries[key.id] = Entry(key: key, replay: cache)
        }
        self.entries = entries
    }

    public var keyIDs: [String] { entries.keys.sorted() }

    public func replayCache(for keyID: String) -> ReplayCache? { entries[keyID]?.replay }

    /// Returns the authenticated key id (nil when unauthenticated requests are allowed and
    /// none was sent), or the error to send back. Reasons name the key id escaped. Times in
    /// milliseconds: `wallNow` Unix time, `monotonicNow` a monotonic clock.
    public func authenticate(_ decoded: DecodedConvertMessage, wallNow: UInt64, monotonicNow: UInt64) throws(ConvertProtocolError) -> String? {
        guard let cookieBytes = decoded.message.cookie, let valueOffset = decoded.cookieValueOffset else {
            if settings.requireCookie { throw ConvertProtocolError(.missingCookie, "request carries no Cookie TLV") }
            return nil
        }
        let cookie = try ConvertCookie(decoding: cookieBytes)
        // Escaped only if a refusal names it: the accepted path never builds the string.
        var shownID: String { PeerText.escaped(cookie.keyID) }
        guard let entry = entries[cookie.keyID] else {
            throw ConvertProtocolError(.notAuthorized, "unknown key id \"\(shownID)\"")
        }
        let freshness = settings.freshness
        guard freshness.accepts(cookie.timestamp, now: wallNow) else {
            let skew = cookie.timestamp >= wallNow ? "\(cookie.timestamp - wallNow) ms ahead of" : "\(wallNow - cookie.timestamp) ms behind"
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": timestamp \(cookie.timestamp) is \(skew) now, outside -\(freshness.past / 1000)/+\(freshness.future / 1000) s")
        }
        let raw = decoded.raw
        let macStart = valueOffset + cookie.macOffset
        guard macStart >= 0, macStart <= raw.count - ConvertCookie.macLength else {
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": cookie MAC lies outside the message")
        }
        // The MAC over the message with its own 32 bytes as zeros, from the key's prepared state
        // (PreparedHMAC), over a stack copy (at most 1020 bytes). The comparison is constant-time.
        let matches = raw.withUnsafeBytes { message in
            withUnsafeTemporaryAllocation(byteCount: message.count, alignment: 8) { copy in
                copy.copyMemory(from: message)
                UnsafeMutableRawBufferPointer(rebasing: copy[macStart..<(macStart + ConvertCookie.macLength)]).initializeMemory(as: UInt8.self, repeating: 0)
                return entry.key.hmac.withAuthenticationCode(for: UnsafeRawBufferPointer(copy)) { computed in
                    cookie.mac.withUnsafeBytes { received in constantTimeEqual(computed, received) }
                }
            }
        }
        guard matches else {
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": MAC does not match")
        }
        guard let nonce = Nonce(cookie.nonce) else {
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": nonce is not \(ConvertCookie.nonceLength) bytes")
        }
        switch entry.replay.admit(nonce: nonce, timestamp: cookie.timestamp, wallNow: wallNow, monotonicNow: monotonicNow, freshness: freshness) {
        case .fresh:
            return cookie.keyID
        case .replayed:
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": nonce was already used (replay)")
        case .belowFloor:
            throw ConvertProtocolError(.notAuthorized, "key id \"\(shownID)\": timestamp \(cookie.timestamp) is at or below this key's replay floor \(entry.replay.floor) (cache full, or before the server started)")
        }
    }
}

/// Whether `a` and `b` hold the same bytes, in time that depends only on their lengths (a MAC
/// compared byte by byte with an early exit tells an attacker how many leading bytes are right).
func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for index in 0..<a.count { difference |= a[index] ^ b[index] }
    return difference == 0
}
