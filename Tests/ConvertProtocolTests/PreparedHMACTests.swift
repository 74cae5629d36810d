import ConvertProtocol
import Crypto
import Testing

@Suite("HMAC-SHA256 with prepared pads")
struct PreparedHMACTests {
    static func hex(_ bytes: [UInt8]) -> String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    func mac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { PreparedHMAC(key: SymmetricKey(data: key)).authenticationCode(for: $0) }
    }

    @Test("RFC 4231 test cases 1, 2 and 6 (a key longer than a block is hashed first)")
    func rfc4231() {
        #expect(Self.hex(mac(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(Self.hex(mac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(Self.hex(mac(key: [UInt8](repeating: 0xaa, count: 131), message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)))
                == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    @Test("the same MAC as swift-crypto's HMAC<SHA256> for keys of 0-200 bytes and messages of 0-1,100 bytes, the same key reused")
    func matchesSwiftCrypto() {
        var generator = SystemRandomNumberGenerator()
        for keyLength in [0, 1, 31, 32, 63, 64, 65, 128, 200] {
            let key = (0..<keyLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let symmetric = SymmetricKey(data: key)
            let prepared = PreparedHMAC(key: symmetric)
            for length in [0, 1, 55, 56, 63, 64, 65, 112, 119, 120, 128, 1020, 1100] {
                let message = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let expected = Array(HMAC<SHA256>.authenticationCode(for: message, using: symmetric))
                let got = message.withUnsafeBytes { prepared.authenticationCode(for: $0) }
                #expect(got == expected, "key \(keyLength) bytes, message \(length) bytes")
            }
        }
    }
}
