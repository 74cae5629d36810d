/// Where a structure-aware generator takes its decisions from. The same generator runs from a
/// seeded PRNG in the test suite and from libFuzzer's input bytes in `tools/fuzz`, so the
/// coverage-guided fuzzer steers the structure (which TLVs, which lengths, which timestamps)
/// rather than only flipping bytes.
public protocol FuzzChoices {
    mutating func byte() -> UInt8
}

extension FuzzChoices {
    public mutating func uint16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    public mutating func uint64() -> UInt64 {
        var value: UInt64 = 0
        for _ in 0..<8 { value = value << 8 | UInt64(byte()) }
        return value
    }

    /// 0..<count (count ≥ 1).
    public mutating func below(_ count: Int) -> Int { Int(uint16()) % max(1, count) }

    public mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<max(0, count)).map { _ in byte() } }

    public mutating func pick<T>(_ options: [T]) -> T { options[below(options.count)] }
}

/// Decisions read from a fuzzer's input; zeros once it runs out (libFuzzer then learns that
/// longer inputs reach further).
public struct ByteChoices: FuzzChoices {
    private let input: [UInt8]
    private var index = 0

    public init(_ input: [UInt8]) { self.input = input }

    public mutating func byte() -> UInt8 {
        guard index < input.count else { return 0 }
        defer { index += 1 }
        return input[index]
    }

    /// What the generator did not consume (handed to the byte-level target).
    public var remaining: [UInt8] { index < input.count ? Array(input[index...]) : [] }
}

/// Decisions from a seeded SplitMix64: reproducible runs in the test suite.
public struct SeededChoices: FuzzChoices {
    private var state: UInt64
    private var buffered: UInt64 = 0
    private var left = 0

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func byte() -> UInt8 {
        if left == 0 {
            buffered = next()
            left = 8
        }
        left -= 1
        defer { buffered >>= 8 }
        return UInt8(truncatingIfNeeded: buffered)
    }
}
