/// Collects one Convert message from a byte stream, asking for exactly the bytes it still
/// needs, so whatever follows the message (relayed data) is never read by mistake.
public struct ConvertFrameReader: Sendable {
    public private(set) var received: [UInt8] = []
    private var total: Int?

    public init() {}

    /// How many bytes to read next (at most).
    public var bytesNeeded: Int {
        max(0, (total ?? ConvertWire.headerLength) - received.count)
    }

    /// Adds bytes; returns the whole message once complete. Throws as soon as the fixed
    /// header shows the stream is not a Convert message.
    public mutating func consume(_ bytes: some Collection<UInt8>) throws(ConvertProtocolError) -> [UInt8]? {
        received.append(contentsOf: bytes)
        if total == nil {
            total = try ConvertMessage.expectedLength(prefix: received)
        }
        guard let total, received.count >= total else { return nil }
        // Callers read exactly `bytesNeeded`; anything beyond the message is not ours.
        return Array(received.prefix(total))
    }
}
