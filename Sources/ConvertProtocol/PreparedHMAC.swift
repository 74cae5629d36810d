import Crypto

/// HMAC-SHA256 (RFC 2104) for one key, with the key's inner and outer pads hashed once, as
/// RFC 2104 §4 suggests: each message then costs its own blocks and one for the outer hash.
///
/// swift-crypto's `HMAC<SHA256>` keeps those pads too, but reaches SHA-256 through its generic
/// `update<D: DataProtocol>` and `HashFunction` witnesses, unspecialised across the module
/// boundary: measured with callgrind, about 5,000 instructions a message beyond the hashing
/// itself, on both ends of every connection (docs/decisions/0008). This calls swift-crypto's
/// concrete `SHA256` only (`update(bufferPointer:)`, `finalize()`), so the hashing stays the
/// library's. `ConvertCookieTests` checks it against `HMAC<SHA256>` and RFC 4231's vectors.
public struct PreparedHMAC: @unchecked Sendable {  // SHA256 states are values, copied per message
    private let inner: SHA256
    private let outer: SHA256

    public static let blockLength = 64

    public init(key: SymmetricKey) {
        // Keys longer than a block are hashed first; shorter ones are padded with zeros.
        var block = [UInt8](repeating: 0, count: Self.blockLength)
        key.withUnsafeBytes { bytes in
            if bytes.count > Self.blockLength {
                SHA256.hash(data: bytes).withUnsafeBytes { digest in
                    for index in 0..<digest.count { block[index] = digest[index] }
                }
            } else {
                for index in 0..<bytes.count { block[index] = bytes[index] }
            }
        }
        var inner = SHA256()
        var outer = SHA256()
        (block.map { $0 ^ 0x36 }).withUnsafeBytes { inner.update(bufferPointer: $0) }
        (block.map { $0 ^ 0x5c }).withUnsafeBytes { outer.update(bufferPointer: $0) }
        self.inner = inner
        self.outer = outer
    }

    /// The 32-byte MAC of `message`, passed to `body` (no array is made for it).
    public func withAuthenticationCode<R>(for message: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        var innerHash = inner
        innerHash.update(bufferPointer: message)
        var outerHash = outer
        innerHash.finalize().withUnsafeBytes { outerHash.update(bufferPointer: $0) }
        return outerHash.finalize().withUnsafeBytes(body)
    }

    /// The MAC of `message` as bytes.
    public func authenticationCode(for message: UnsafeRawBufferPointer) -> [UInt8] {
        withAuthenticationCode(for: message) { Array($0) }
    }
}
