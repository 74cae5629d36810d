import DataPlane

/// One configured rule: allow or deny destinations in some networks and port ranges, for every
/// key or only some, optionally asking for a PROXY v2 header towards what it allows.
public struct AccessRule: Equatable, Sendable {
    public enum Action: String, Sendable { case allow, deny }

    public var action: Action
    /// Empty: every address.
    public var networks: [IPNetwork]
    /// Empty: every port.
    public var ports: [PortRange]
    /// Empty: every key.
    public var keys: Set<String>
    /// Send a PROXY protocol v2 header (the LAN host's address) to destinations this rule allows.
    public var proxyProtocol: Bool
    /// How logs and metrics name it: given, or "rule N (file:line)".
    public var name: String

    public init(action: Action, networks: [IPNetwork] = [], ports: [PortRange] = [], keys: Set<String> = [],
                proxyProtocol: Bool = false, name: String) {
        self.action = action
        self.networks = networks
        self.ports = ports
        self.keys = keys
        self.proxyProtocol = proxyProtocol
        self.name = name
    }

    func matches(_ address: IPAddress, port: UInt16, keyID: String?) -> Bool {
        if !keys.isEmpty {
            guard let keyID, keys.contains(keyID) else { return false }
        }
        if !networks.isEmpty, !networks.contains(where: { $0.contains(address) }) { return false }
        if !ports.isEmpty, !ports.contains(where: { $0.contains(port) }) { return false }
        return true
    }
}

/// The verdict on one destination address, naming the rule that decided it.
public struct AccessVerdict: Equatable, Sendable {
    public var allowed: Bool
    public var rule: String
    public var proxyProtocol: Bool
}

/// Which destinations a key may reach. Evaluation order, first match wins:
/// 1. the configured rules, in file order (a rule with `keys` applies to those keys only), so an
///    operator can open, say, 10.0.5.0/24:5432 to one key;
/// 2. the built-in refusals: what an endpoint on a public address must never be turned into a
///    way to reach — its own loopback and addresses, the cloud metadata service (link-local
///    169.254.169.254), private, shared, unique-local, multicast and reserved ranges;
/// 3. `defaultAction` (allow: the public Internet).
/// Addresses are normalised first: IPv4-mapped IPv6 (::ffff:a.b.c.d) is checked as IPv4, and
/// the IPv4 address inside NAT64's well-known prefix (64:ff9b::/96) is checked as well, so no
/// private IPv4 address is reachable written as IPv6.
public struct AccessPolicy: Sendable {
    public var rules: [AccessRule]
    public var defaultAction: AccessRule.Action
    /// The host's own addresses (kept current by HostAddresses).
    public var hostAddresses: Set<IPAddress>

    public static let builtInRefusals: [(network: IPNetwork, name: String)] = [
        ("0.0.0.0/8", "this network (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("10.0.0.0/8", "private (RFC 1918, 10.0.0.0/8)"),
        ("172.16.0.0/12", "private (RFC 1918, 172.16.0.0/12)"),
        ("192.168.0.0/16", "private (RFC 1918, 192.168.0.0/16)"),
        ("100.64.0.0/10", "shared address space (RFC 6598, 100.64.0.0/10)"),
        ("169.254.0.0/16", "link-local and cloud metadata (169.254.0.0/16)"),
        ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved and broadcast (240.0.0.0/4)"),
        ("::/128", "unspecified (::)"),
        ("::1/128", "loopback (::1)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("fec0::/10", "site-local (fec0::/10)"),
        ("fc00::/7", "unique local (fc00::/7)"),
        ("ff00::/8", "multicast (ff00::/8)"),
        ("100::/64", "discard (100::/64)"),
    ].map { (try! IPNetwork(parsing: $0.0), "default: \($0.1)") }

    private static let nat64 = try! IPNetwork(parsing: "64:ff9b::/96")

    public init(rules: [AccessRule] = [], defaultAction: AccessRule.Action = .allow, hostAddresses: Set<IPAddress> = []) {
        self.rules = rules
        self.defaultAction = defaultAction
        self.hostAddresses = Set(hostAddresses.map(\.normalized))
    }

    public func verdict(for address: IPAddress, port: UInt16, keyID: String?) -> AccessVerdict {
        let normalized = address.normalized
        var forms = [normalized]
        if Self.nat64.contains(normalized) {
            forms.append(.v4(AddressBytes(normalized.bytes[12..<16])))
        }
        for rule in rules where forms.contains(where: { rule.matches($0, port: port, keyID: keyID) }) {
            return AccessVerdict(allowed: rule.action == .allow, rule: rule.name, proxyProtocol: rule.proxyProtocol)
        }
        for form in forms {
            if let refusal = Self.builtInRefusals.first(where: { $0.network.contains(form) }) {
                return AccessVerdict(allowed: false, rule: refusal.name, proxyProtocol: false)
            }
            if hostAddresses.contains(form) {
                return AccessVerdict(allowed: false, rule: "default: this host's own address", proxyProtocol: false)
            }
        }
        return AccessVerdict(allowed: defaultAction == .allow, rule: "default-action \(defaultAction.rawValue)", proxyProtocol: false)
    }
}
