import DataPlane
@testable import Proxy
import Testing

/// The nftables text and routing commands of --install-rules, without a kernel (the testbed's
/// InterceptionRulesTests load them into one).
@Suite("Interception rules text")
struct InterceptionRulesTextTests {
    let server = SocketAddress(.v4([203, 0, 113, 7]), port: 4443)
    let server6 = SocketAddress(.v6(AddressBytes([0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [9])), port: 4443)

    @Test("REDIRECT: one table, replaced atomically; servers, own addresses and private ranges bypassed; no routing")
    func redirect() throws {
        let rules = try InterceptionRules(mode: .redirect, port: 12345, lanInterfaces: ["br-lan", "wlan1"], servers: [server, server6])
        let text = rules.installScript
        #expect(text.hasPrefix("table inet mptcp_proxy {}\ndelete table inet mptcp_proxy\ntable inet mptcp_proxy {"))
        #expect(text.contains("iifname != { \"br-lan\", \"wlan1\" } return"))
        #expect(text.contains("fib daddr type local return"))
        #expect(text.contains("203.0.113.7/32") && text.contains("2001:db8::9/128") && text.contains("192.168.0.0/16") && text.contains("fc00::/7"))
        #expect(text.contains("type nat hook prerouting priority dstnat") && text.contains("meta l4proto tcp redirect to :12345"))
        #expect(!text.contains("udp dport 443"), "QUIC is blocked only when asked")
        #expect(rules.routingInstall.isEmpty)
    }

    @Test("TPROXY: mangle hook, mark and policy routing for both families; QUIC rejected when asked")
    func tproxy() throws {
        let rules = try InterceptionRules(mode: .tproxy, port: 12345, lanInterfaces: ["lan0"], bypass: [], blockQUIC: true)
        let text = rules.installScript
        #expect(text.contains("type filter hook prerouting priority mangle") && text.contains("meta mark set 28016 tproxy to :12345 accept"))
        #expect(text.contains("iifname { \"lan0\" } udp dport 443 reject"))
        #expect(rules.routingInstall.map { $0.joined(separator: " ") } == [
            "-4 rule add fwmark 28016 lookup 28016 priority 10070", "-6 rule add fwmark 28016 lookup 28016 priority 10070",
            "-4 route replace local 0.0.0.0/0 dev lo table 28016", "-6 route replace local ::/0 dev lo table 28016",
        ])
        #expect(InterceptionRules.routingRemoval.count == 4)
    }

    @Test("interface names cannot carry nft syntax; at least one is required")
    func interfaceNames() {
        for bad in ["", "lan0\" } accept; {", "a b", "sixteen-chars-ab", "eth0;"] {
            #expect(throws: InterceptionRules.Invalid.self) { try InterceptionRules(mode: .redirect, port: 1, lanInterfaces: [bad]) }
        }
        #expect(throws: InterceptionRules.Invalid.self) { try InterceptionRules(mode: .redirect, port: 1, lanInterfaces: []) }
    }
}
