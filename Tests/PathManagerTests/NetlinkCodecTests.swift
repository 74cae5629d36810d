import DataPlane
import MPTCPKernel
import TestSupport
import Testing

/// Netlink messages recorded from Linux 6.18 on the testbed (tools: a raw netlink socket in the
/// gw namespace), parsed by netlink/mpx_netlink.c through NetlinkRecord.
@Suite("Netlink codec on recorded bytes")
struct NetlinkCodecTests {
    static func bytes(_ hex: String) -> [UInt8] { TestSupport.bytes(hex: hex) }

    /// RTM_NEWLINK for `ip link set eth down` (ifindex 4).
    static let linkDown = bytes(
        "d805000010000000000000000000000000000100040000000210000001000000080003006574680008000d00e8030000" +
        "05001000020000000500110000000000050043000000000008000400dc050000080032004400000008003300ffff0000" +
        "08001b000000000008001e000000000008003d000000000008001f000200000008002800ffff00000800290000000100" +
        "08003a000000010008003f0000000100080040000000010008003b00f8ff070008003c00ffff00000800420000000000" +
        "08002000020000000500210000000000080023000300000008002f000100000008003000020000000600440000000000" +
        "060045000000000005002700000000000a0001008ae03965af4a00000a000200ffffffffffff0000cc00170001000000" +
        "0000000001000000000000005a000000000000005a000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000006400070001000000010000005a0000005a000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "00000000000000000c002b00050002000000000010001200090001007665746800000000080025000100000008000500" +
        "04000000080006007462660030031a008c00020088000100000000000000000000000000010000000100000001000000" +
        "010000000000000001000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000010270000e80300000000000000000000" +
        "000000000000000001000000a0020a00080001000000008014000500ffff000038ae050090730000e8030000f4000200" +
        "0000000040000000dc05000001000000010000000100000001000000ffffffffa00f0000e803000000000000803a0900" +
        "805101000300000058020000100000000000000001000000010000000100000060ea0000000000000000000000000000" +
        "00000000000000000000000001000000000000000000000010270000e803000001000000000000000000000001000000" +
        "0000000000000000010000000000000000000000000000000000000080ee360000000000000000000100000000000000" +
        "000000000000000000000000000000000004000000000000ffff0000ffffffff01000000000000000000000000000000" +
        "34010300260000000000000001000000000000004c000000000000000000000000000000010000000000000000000000" +
        "0000000000000000000000000000000000000000010000000000000001000000000000004c0000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
        "000000000000000000000000000000000000000000000000000000000000000000000000010000000000000001000000" +
        "00000000000000000000000000000000000000004c000000000000004c00000000000000000000000000000000000000" +
        "00000000000000000000000000000000000000003c000600070000000000000000000000000000000000000000000000" +
        "010000000000000000000000000000000000000000000000000000000000000014000700000000000000000000000000" +
        "00000000050008000000000024000e000000000000000000000000000000000000000000000000000000000000000000" +
        "04003e8004004180")

    /// RTM_DELADDR for `ip addr del 10.1.3.1/24 dev cell`.
    static let addressDeleted = bytes(
        "50000000150000005aae046bff0600000218800005000000080001000a010301080002000a0103010900030063656c6c" +
        "00000000080008008000000014000600ffffffffffffffff39ae050039ae0500")

    /// mptcp_pm events (family id 28 at recording time): LISTENER_CREATED, CREATED, CREATED (server side).
    static let pmFamily: UInt16 = 28
    static let listenerCreated = bytes(
        "2c0000001c00000000000000000000000f0100000600020002000000060009001e610000080005000a010101")
    static let created = bytes(
        "540000001c000000000000000000000001010000080001008dd4c9b10600020002000000080005000a01010108000700" +
        "0a01010106000900a2d2000006000a001e61000005000300000000000500040000000000")
    static let createdServerSide = bytes(
        "640000001c0000000000000000000000010100000800010056ab5842050012000100000006000d000200000006000200" +
        "02000000080005000a010101080007000a010101060009001e61000006000a00a2d20000050003000000000005000400" +
        "00000000")

    @Test("a link going down")
    func linkDown() throws {
        let records = NetlinkRecord.parse(Self.linkDown)
        guard case .link(let link)? = records.first, records.count == 1 else {
            Issue.record("expected one link record, got \(records)")
            return
        }
        #expect(link.name == "eth")
        #expect(link.index == 4)
        #expect(!link.isUsable)
        #expect(link.flags & 0x1 == 0)
    }

    @Test("an address removed")
    func addressDeleted() throws {
        guard case .address(let address)? = NetlinkRecord.parse(Self.addressDeleted).first else {
            Issue.record("expected an address record")
            return
        }
        #expect(address.deleted)
        #expect(address.address == IPAddress(parsing: "10.1.3.1"))
        #expect(address.prefixLength == 24)
    }

    @Test("MPTCP events, ports converted from network order")
    func events() throws {
        guard case .mptcpEvent(let listener)? = NetlinkRecord.parse(Self.listenerCreated, pmFamily: Self.pmFamily).first else {
            Issue.record("expected an event")
            return
        }
        #expect(listener.kind == .listenerCreated)
        #expect(listener.localPort == 7777)
        #expect(listener.localAddress == IPAddress(parsing: "10.1.1.1"))
        guard case .mptcpEvent(let created)? = NetlinkRecord.parse(Self.created, pmFamily: Self.pmFamily).first else {
            Issue.record("expected an event")
            return
        }
        #expect(created.kind == .created)
        #expect(created.token != nil)
        #expect(created.remotePort == 7777)
        #expect(created.remoteAddress == IPAddress(parsing: "10.1.1.1"))
        guard case .mptcpEvent(let server)? = NetlinkRecord.parse(Self.createdServerSide, pmFamily: Self.pmFamily).first else {
            Issue.record("expected an event")
            return
        }
        #expect(server.localPort == 7777)
    }

    @Test("truncated and corrupted bytes give a malformed record, never a crash")
    func malformed() {
        for cut in [3, 17, 40, Self.linkDown.count - 1] {
            let records = NetlinkRecord.parse(Array(Self.linkDown.prefix(cut)))
            #expect(records.allSatisfy { if case .link = $0 { return false }; return true }, "cut at \(cut): \(records)")
        }
        // A connection event without its token is refused (token is required per event).
        var noToken = Self.created
        noToken[20 + 2] = 0x7f  // retype the first attribute (TOKEN) to an unknown one
        guard case .malformed(let why)? = NetlinkRecord.parse(noToken, pmFamily: Self.pmFamily).first else {
            Issue.record("expected malformed")
            return
        }
        #expect(why.contains("TOKEN"))
        // Random bytes: whatever comes out, nothing crashes or loops.
        var state: UInt64 = 42
        for _ in 0..<2_000 {
            var bytes = Self.created
            for _ in 0..<4 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                bytes[Int(state >> 33) % bytes.count] = UInt8(truncatingIfNeeded: state >> 17)
            }
            _ = NetlinkRecord.parse(bytes, pmFamily: Self.pmFamily)
        }
    }
}
