import Glibc
import NetworkTypes
import Testing

/// Prefix matching, against integer arithmetic as the reference (the rules' hot path compares
/// bytes in place).
@Suite("IP networks")
struct IPNetworkTests {
    @Test("contains agrees with integer masking for every IPv4 prefix length, near and far addresses")
    func ipv4AgainstIntegers() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            let base = UInt32.random(in: .min ... .max, using: &generator)
            let length = Int.random(in: 0...32, using: &generator)
            // Half the candidates differ from the base only in a few low bits, so both sides of
            // the boundary are hit at every length.
            let candidate = Bool.random(using: &generator) ? base ^ (UInt32(1) << UInt32.random(in: 0...31, using: &generator))
                                                            : UInt32.random(in: .min ... .max, using: &generator)
            let mask: UInt32 = length == 0 ? 0 : ~UInt32(0) << (32 - length)
            let network = IPNetwork(Self.v4(base), prefixLength: length)
            #expect(network.contains(Self.v4(candidate)) == (candidate & mask == base & mask), "\(network) \(Self.v4(candidate))")
        }
    }

    @Test("IPv6 prefixes, the family check, and the degenerate /0 and /128")
    func ipv6AndFamilies() throws {
        let network = try IPNetwork(parsing: "fc00::/7")
        #expect(network.contains(try #require(IPAddress(parsing: "fd12:3456::1"))))
        #expect(!network.contains(try #require(IPAddress(parsing: "fe80::1"))))
        #expect(!network.contains(try #require(IPAddress(parsing: "10.0.0.1"))), "an IPv4 address is in no IPv6 network")
        #expect(try IPNetwork(parsing: "::/0").contains(try #require(IPAddress(parsing: "2001:db8::5"))))
        let host = try IPNetwork(parsing: "2001:db8::5")
        #expect(host.contains(try #require(IPAddress(parsing: "2001:db8::5"))))
        #expect(!host.contains(try #require(IPAddress(parsing: "2001:db8::4"))))
        #expect(!(try IPNetwork(parsing: "10.0.0.0/8")).contains(try #require(IPAddress(parsing: "11.0.0.1"))))
    }

    private static func v4(_ value: UInt32) -> IPAddress {
        .v4([UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)])
    }
}

/// The inline address bytes behind `IPAddress`.
@Suite("Address bytes")
struct AddressBytesTests {
    @Test("one address made four ways is equal and hashes equal; bytes read back as written")
    func madeFourWays() throws {
        let parsed = try #require(IPAddress(parsing: "2001:db8::a:b"))
        let fromWire = IPAddress(wire16: Array(parsed.wire16)[...])
        var storage = sockaddr_storage()
        let viaSockaddr = SocketAddress(parsed, port: 9).withSockAddr { address, length in
            withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: address, count: Int(length))) }
            return SocketAddress(storage: storage)?.address
        }
        let literal = IPAddress.v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0x0b])
        for other in [fromWire, viaSockaddr, literal] {
            #expect(other == parsed)
            #expect(other?.hashValue == parsed.hashValue)
        }
        #expect(Array(parsed.bytes) == [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0x0b])
        let v4 = try #require(IPAddress(parsing: "192.0.2.200"))
        #expect(Array(v4.bytes) == [192, 0, 2, 200] && v4.bytes.count == 4)
        #expect(IPAddress(wire16: Array(v4.wire16)[...]) == v4, "IPv4-mapped comes back as IPv4")
        #expect(v4 != IPAddress.v6(AddressBytes([192, 0, 2, 200] + [UInt8](repeating: 0, count: 12))))
    }

    @Test("writing a byte changes that byte only; at most 16 bytes are taken")
    func mutationAndCapacity() {
        var bytes = AddressBytes(zeros: 16)
        for index in 0..<16 { bytes[index] = UInt8(index * 17) }
        #expect(Array(bytes) == (0..<16).map { UInt8($0 * 17) })
        bytes[7] = 0xff
        bytes[8] = 0
        #expect(bytes[6] == 102 && bytes[7] == 0xff && bytes[8] == 0 && bytes[9] == 153)
        #expect(AddressBytes([UInt8](repeating: 1, count: 40)).count == 16)
        #expect(AddressBytes([1, 2, 3, 4]) == [1, 2, 3, 4])
    }

    @Test("from two words, every count from 0 to 16 keeps the first bytes and clears the rest, equal to the same bytes taken one by one")
    func fromWords() {
        let all: [UInt8] = (1...16).map { UInt8($0 * 15) }
        let high = all[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let low = all[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        for count in 0...16 {
            let fast = AddressBytes(high: high, low: low, count: count)
            #expect(Array(fast) == Array(all.prefix(count)), "count \(count)")
            #expect(fast == AddressBytes(all.prefix(count)) && fast.hashValue == AddressBytes(all.prefix(count)).hashValue, "count \(count)")
        }
        #expect(AddressBytes(high: high, low: low, count: 40).count == 16)
        #expect(AddressBytes(high: high, low: low, count: -1).isEmpty)
    }
}
