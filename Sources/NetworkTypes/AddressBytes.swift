/// The 4 or 16 bytes of an IP address, held inline (two words and a count), network order.
///
/// An `IPAddress` used to carry a `[UInt8]`: every address made was a heap allocation, and a
/// relayed connection keeps two (its peer and its destination), 96 bytes of each idle
/// connection, with more made and freed per connection for decoded and checked addresses
/// (callgrind and B5; docs/decisions/0014). A collection of bytes, so addresses are still
/// indexed, sliced, compared and copied as bytes, and an array literal makes one.
public struct AddressBytes: RandomAccessCollection, MutableCollection, Hashable, Sendable, ExpressibleByArrayLiteral {
    /// Bytes 0-7 and 8-15, the first byte in the most significant bits; bytes past `count`
    /// are zero, so equal addresses have equal words.
    public private(set) var high: UInt64 = 0
    public private(set) var low: UInt64 = 0
    private let length: UInt8

    public static let capacity = 16

    /// The first 16 bytes of `bytes` (the cases of `IPAddress` hold 4 and 16).
    public init(_ bytes: some Sequence<UInt8>) {
        var count = 0
        var high: UInt64 = 0
        var low: UInt64 = 0
        for byte in bytes {
            guard count < Self.capacity else { break }
            if count < 8 {
                high |= UInt64(byte) << UInt64(56 - 8 * count)
            } else {
                low |= UInt64(byte) << UInt64(56 - 8 * (count - 8))
            }
            count += 1
        }
        self.high = high
        self.low = low
        self.length = UInt8(count)
    }

    public init(arrayLiteral elements: UInt8...) { self.init(elements) }

    /// The first `count` bytes (at most 16) of two words holding bytes 0-7 and 8-15, the first
    /// in the most significant bits; the bytes past `count` are cleared. The way in from a
    /// fixed 16-byte buffer: `init(_:)` iterates a generic sequence, which across modules is
    /// not specialised, and was 18 % of path health's samples (perf, 300 subflows a sample).
    public init(high: UInt64, low: UInt64, count: Int) {
        let count = Swift.min(Swift.max(count, 0), Self.capacity)
        func keep(_ bytes: Int) -> UInt64 { bytes <= 0 ? 0 : bytes >= 8 ? ~0 : ~0 << UInt64(64 - 8 * bytes) }
        self.high = high & keep(count)
        self.low = low & keep(count - 8)
        self.length = UInt8(count)
    }

    /// `count` zero bytes (at most 16).
    public init(zeros count: Int) {
        length = UInt8(Swift.min(Swift.max(count, 0), Self.capacity))
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { Int(length) }

    public subscript(position: Int) -> UInt8 {
        get {
            precondition(position >= 0 && position < Int(length), "address byte \(position) of \(length)")
            return position < 8 ? UInt8(truncatingIfNeeded: high >> UInt64(56 - 8 * position))
                                : UInt8(truncatingIfNeeded: low >> UInt64(56 - 8 * (position - 8)))
        }
        set {
            precondition(position >= 0 && position < Int(length), "address byte \(position) of \(length)")
            if position < 8 {
                let shift = UInt64(56 - 8 * position)
                high = high & ~(0xff << shift) | UInt64(newValue) << shift
            } else {
                let shift = UInt64(56 - 8 * (position - 8))
                low = low & ~(0xff << shift) | UInt64(newValue) << shift
            }
        }
    }
}
