import ConvertProtocol
import NetworkTypes
import Testing

/// The worked example of docs/protocol.md, byte for byte: if the wire format changes, this
/// fails and the document must change with it.
@Suite("docs/protocol.md worked example")
struct WorkedExampleTests {
    @Test("signed request for 198.51.100.2:80 with key gw-1")
    func workedExample() throws {
        let key = ClientKey(id: "gw-1", secret: Array(0..<32))
        let raw = try ConvertMessage.signedRequest(
            to: SocketAddress(.v4([198, 51, 100, 2]), port: 80), key: key,
            timestamp: 1_795_000_000_000, nonce: Array(0xa0..<0xb0))
        let hex = raw.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        #expect(hex == Self.expected, "\(hex)")
    }

    static let expected = "01172263" + "0a050050" + "00000000000000000000ffffc6336402"
        + "16110000" + "0104" + "67772d31" + "000001a1ee565e00" + "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
        + "5d3852bfbe4487db5e94738a42a35ebf335224d8e1239a944bee32eaf5184518" + "0000"
}

/// The Info exchange of the worked example (the client's health check of a server).
@Suite("docs/protocol.md worked example: Info")
struct WorkedInfoExampleTests {
    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    @Test("Info-only request with key gw-1, and the converter's Supported TCP Extensions reply")
    func infoExchange() throws {
        let key = ClientKey(id: "gw-1", secret: Array(0..<32))
        let request = try ConvertMessage.signedRequest([.info], key: key, timestamp: 1_795_000_000_000, nonce: Array(0xa0..<0xb0))
        #expect(Self.hex(request) == Self.request, "\(Self.hex(request))")
        #expect(Self.hex(try ConvertMessage.info.encoded()) == Self.reply)
        #expect(Self.hex(try ConvertMessage.success(info: true).encoded()) == Self.successWithInfo)
    }

    static let request = "01132263" + "01010000" + "16110000" + "0104" + "67772d31" + "000001a1ee565e00"
        + "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf" + "a5d73c7cff1a0ed022236020d697e51f27c880cd576ba3afb7afac1b6da6d531" + "0000"
    static let reply = "01032263" + "15020000" + "1e000000"
    static let successWithInfo = "01042263" + "14010000" + "15020000" + "1e000000"
}
