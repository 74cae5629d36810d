import DataPlane

/// What `mptcp-proxy client --install-rules` puts in the kernel so the LAN's TCP reaches the
/// transparent listener: one nftables table of its own (`inet mptcp_proxy`) and, for TPROXY, a
/// policy-routing rule and a local route. Pure text and argument lists; the command line runs
/// them (`nft -f -`, `ip`). Every script first deletes whatever a previous run left (a crash
/// leaves the table behind), in the same atomic nft transaction that installs the new one.
public struct InterceptionRules: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// nat REDIRECT: the listener reads the original destination from conntrack.
        case redirect
        /// TPROXY: no NAT; marked packets are routed to the local stack, the listener
        /// (IP_TRANSPARENT) sees the original destination as its local address.
        case tproxy
    }

    public static let table = "mptcp_proxy"
    /// Firewall mark and routing table of TPROXY mode ("mp").
    public static let mark: UInt32 = 0x6d70
    public static let routingTable: UInt32 = 0x6d70
    public static let rulePriority: UInt32 = 10_070

    /// Never intercepted by default: traffic that stays on the LAN side or that the server
    /// refuses anyway (loopback, RFC 1918, CGNAT, link-local, multicast, ULA).
    public static let defaultBypass: [IPNetwork] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    ].map { try! IPNetwork(parsing: $0) }

    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public var mode: Mode
    /// The transparent listener's port.
    public var port: UInt16
    public var lanInterfaces: [String]
    /// Destinations left alone: the defaults, the operator's, and the server endpoints.
    public var bypass: [IPNetwork]
    /// Reject the LAN's UDP 443 (QUIC), so browsers fall back to TCP, which is bonded.
    public var blockQUIC: Bool

    public init(mode: Mode, port: UInt16, lanInterfaces: [String], bypass: [IPNetwork] = InterceptionRules.defaultBypass,
                servers: [SocketAddress] = [], blockQUIC: Bool = false) throws(Invalid) {
        guard !lanInterfaces.isEmpty else { throw Invalid(description: "interception rules need the LAN interfaces (--lan-interface)") }
        for name in lanInterfaces where !Self.isInterfaceName(name) {
            throw Invalid(description: "\"\(PeerText.escaped(name))\" is not an interface name (1-15 of A-Z a-z 0-9 . _ -)")
        }
        self.mode = mode
        self.port = port
        self.lanInterfaces = lanInterfaces
        self.bypass = bypass + servers.map { IPNetwork($0.address, prefixLength: $0.address.bytes.count * 8) }
        self.blockQUIC = blockQUIC
    }

    static func isInterfaceName(_ name: String) -> Bool {
        (1...15).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }

    /// Deletes our table if it exists (creating an empty one first makes the delete never fail).
    public static let removalScript = "table inet \(table) {}\ndelete table inet \(table)\n"

    /// The whole table, replacing any earlier one atomically.
    public var installScript: String {
        let interfaces = "{ " + lanInterfaces.map { "\"\($0)\"" }.joined(separator: ", ") + " }"
        let v4 = bypass.filter { $0.address.bytes.count == 4 }.map(\.description)
        let v6 = bypass.filter { $0.address.bytes.count == 16 }.map(\.description)
        var lines = [Self.removalScript + "table inet \(Self.table) {"]
        lines.append("    set bypass4 { type ipv4_addr; flags interval; auto-merge; \(v4.isEmpty ? "" : "elements = { \(v4.joined(separator: ", ")) }") }")
        lines.append("    set bypass6 { type ipv6_addr; flags interval; auto-merge; \(v6.isEmpty ? "" : "elements = { \(v6.joined(separator: ", ")) }") }")
        let (hook, priority, action): (String, String, String)
        switch mode {
        case .redirect:
            (hook, priority, action) = ("nat", "dstnat", "meta l4proto tcp redirect to :\(port)")
        case .tproxy:
            (hook, priority, action) = ("filter", "mangle", "meta l4proto tcp meta mark set \(Self.mark) tproxy to :\(port) accept")
        }
        lines.append("""
                chain prerouting {
                    type \(hook) hook prerouting priority \(priority); policy accept;
                    iifname != \(interfaces) return
                    meta l4proto != tcp return
                    fib daddr type local return
                    ip daddr @bypass4 return
                    ip6 daddr @bypass6 return
                    \(action)
                }
            """)
        if blockQUIC {
            lines.append("""
                    chain forward {
                        type filter hook forward priority filter; policy accept;
                        iifname \(interfaces) udp dport 443 reject
                    }
                """)
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// `ip` argument lists that route TPROXY's marked packets to the local stack (both families).
    public var routingInstall: [[String]] {
        guard mode == .tproxy else { return [] }
        return [
            ["-4", "rule", "add", "fwmark", "\(Self.mark)", "lookup", "\(Self.routingTable)", "priority", "\(Self.rulePriority)"],
            ["-6", "rule", "add", "fwmark", "\(Self.mark)", "lookup", "\(Self.routingTable)", "priority", "\(Self.rulePriority)"],
            ["-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", "\(Self.routingTable)"],
            ["-6", "route", "replace", "local", "::/0", "dev", "lo", "table", "\(Self.routingTable)"],
        ]
    }

    /// Undoes `routingInstall` (and a crashed run's): each may fail when there is nothing to remove.
    public static let routingRemoval: [[String]] = [
        ["-4", "rule", "del", "fwmark", "\(mark)", "lookup", "\(routingTable)", "priority", "\(rulePriority)"],
        ["-6", "rule", "del", "fwmark", "\(mark)", "lookup", "\(routingTable)", "priority", "\(rulePriority)"],
        ["-4", "route", "flush", "table", "\(routingTable)"],
        ["-6", "route", "flush", "table", "\(routingTable)"],
    ]
}
