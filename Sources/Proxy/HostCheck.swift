import ConvertProtocol
import DataPlane
import Glibc
import MPTCPKernel

/// `mptcp-proxy check`: what on this host stops the proxy from working well, each with its fix.
/// `HostFacts.gather` reads the host (sysctls of the caller's network namespace, the kernel's
/// MPTCP limits, capabilities, other managers, tools); `HostCheck.diagnose` judges them, pure,
/// so every verdict is tested without changing a host; `HostCheck.probe` asks a server.
public struct HostFinding: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable, Comparable {
        case ok, warning, blocking
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
        var rank: Int { self == .ok ? 0 : self == .warning ? 1 : 2 }
    }

    public var severity: Severity
    public var check: String
    public var detail: String
    public var fix: String?

    public init(_ severity: Severity, _ check: String, _ detail: String, fix: String? = nil) {
        self.severity = severity
        self.check = check
        self.detail = detail
        self.fix = fix
    }

    public var description: String {
        let mark = severity == .ok ? "ok     " : severity == .warning ? "WARNING" : "BLOCKING"
        return "\(mark) \(check): \(detail)" + (fix.map { "\n        fix: \($0)" } ?? "")
    }
}

/// What `diagnose` looks at, read from the host (or made up by a test).
public struct HostFacts: Sendable, Equatable {
    /// net.mptcp.enabled (nil: no MPTCP in this kernel).
    public var mptcpEnabled: Int?
    public var limits: (subflows: UInt32, addAddrAccepted: UInt32)?
    /// net.ipv4.tcp_fastopen.
    public var tcpFastOpen: Int?
    /// Effective rp_filter per interface (the larger of conf.all and conf.IFACE), lo left out.
    public var rpFilter: [String: Int] = [:]
    /// Other programs that manage MPTCP endpoints, running now.
    public var otherManagers: [String] = []
    public var hasNetAdmin = false
    public var nftAvailable = false

    public init() {}

    public static func == (a: HostFacts, b: HostFacts) -> Bool {
        a.mptcpEnabled == b.mptcpEnabled && a.limits?.subflows == b.limits?.subflows && a.limits?.addAddrAccepted == b.limits?.addAddrAccepted
            && a.tcpFastOpen == b.tcpFastOpen && a.rpFilter == b.rpFilter && a.otherManagers == b.otherManagers
            && a.hasNetAdmin == b.hasNetAdmin && a.nftAvailable == b.nftAvailable
    }

    public static func gather() -> HostFacts {
        var facts = HostFacts()
        facts.mptcpEnabled = readInteger("/proc/sys/net/mptcp/enabled")
        if let pm = try? PathManagerClient(), let limits = try? pm.limits() { facts.limits = limits }
        facts.tcpFastOpen = readInteger("/proc/sys/net/ipv4/tcp_fastopen")
        let all = readInteger("/proc/sys/net/ipv4/conf/all/rp_filter") ?? 0
        for name in directoryEntries("/proc/sys/net/ipv4/conf") where !["all", "default", "lo"].contains(name) {
            facts.rpFilter[name] = max(all, readInteger("/proc/sys/net/ipv4/conf/\(name)/rp_filter") ?? 0)
        }
        for pid in directoryEntries("/proc") where pid.allSatisfy(\.isNumber) {
            guard let comm = readText("/proc/\(pid)/comm")?.split(separator: "\n").first.map(String.init) else { continue }
            if ["mptcpd", "NetworkManager"].contains(comm), !facts.otherManagers.contains(comm) { facts.otherManagers.append(comm) }
        }
        facts.hasNetAdmin = effectiveCapabilities().map { $0 & (1 << 12) != 0 } ?? false
        facts.nftAvailable = systemTool("nft") != nil
        return facts
    }

    static func readText(_ path: String) -> String? { try? readTextFile(path) }

    static func readInteger(_ path: String) -> Int? {
        readText(path).flatMap { Int($0.trimmingCharacters(in: " \n\t")) }
    }

    static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// CapEff from /proc/self/status.
    static func effectiveCapabilities() -> UInt64? {
        guard let status = readText("/proc/self/status") else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            return UInt64(line.dropFirst(7).trimmingCharacters(in: " \t"), radix: 16)
        }
        return nil
    }
}

/// Where a system tool (nft, ip) is installed, looked up in the system directories only (not
/// $PATH: a service must not run whatever its environment points at).
public func systemTool(_ name: String) -> String? {
    let candidates: [String] = ["/usr/sbin/\(name)", "/sbin/\(name)", "/usr/bin/\(name)", "/bin/\(name)"]
    return candidates.first { access($0, X_OK) == 0 }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        var slice = Substring(self)
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}

public enum HostCheck {
    public enum Role: String, Sendable, CaseIterable { case client, server }

    public static func diagnose(_ facts: HostFacts, role: Role, transparent: Bool = false) -> [HostFinding] {
        var findings: [HostFinding] = []
        switch facts.mptcpEnabled {
        case nil:
            findings.append(HostFinding(.blocking, "MPTCP", "this kernel has no MPTCP (no net.mptcp.enabled)", fix: "a kernel with CONFIG_MPTCP=y (Linux 5.6 or later; 6.x recommended)"))
        case 0?:
            findings.append(HostFinding(.blocking, "MPTCP", "net.mptcp.enabled is 0: every connection falls back to plain TCP",
                                        fix: "sysctl -w net.mptcp.enabled=1 (and in /etc/sysctl.d/ to keep it)"))
        default:
            findings.append(HostFinding(.ok, "MPTCP", "net.mptcp.enabled = 1"))
        }
        if let limits = facts.limits {
            let needed: UInt32 = 2
            if limits.subflows < needed || (role == .client && limits.addAddrAccepted < needed) {
                findings.append(HostFinding(.warning, "MPTCP limits", "subflows \(limits.subflows), add_addr_accepted \(limits.addAddrAccepted): a connection cannot use every uplink",
                                            fix: "ip mptcp limits set subflows 8 add_addr_accepted 8 (the client's path manager sets them itself)"))
            } else {
                findings.append(HostFinding(.ok, "MPTCP limits", "subflows \(limits.subflows), add_addr_accepted \(limits.addAddrAccepted)"))
            }
        } else if facts.mptcpEnabled != nil {
            findings.append(HostFinding(.warning, "MPTCP limits", "could not read the path manager's limits (generic netlink mptcp_pm)", fix: "run as root or with CAP_NET_ADMIN"))
        }
        if role == .client {
            let fastOpen = facts.tcpFastOpen ?? 0
            if fastOpen & 1 == 0 {
                findings.append(HostFinding(.warning, "TCP Fast Open", "net.ipv4.tcp_fastopen = \(fastOpen): the request cannot ride in the SYN (one round trip more per connection)",
                                            fix: "sysctl -w net.ipv4.tcp_fastopen=3"))
            } else {
                findings.append(HostFinding(.ok, "TCP Fast Open", "net.ipv4.tcp_fastopen = \(fastOpen): the request is sent with the SYN"))
            }
            let strict = facts.rpFilter.filter { $0.value == 1 }.keys.sorted()
            if strict.isEmpty {
                findings.append(HostFinding(.ok, "rp_filter", "no interface filters strictly"))
            } else {
                findings.append(HostFinding(.warning, "rp_filter", "strict reverse-path filtering on \(strict.joined(separator: ", ")): packets of a subflow whose replies route elsewhere are dropped",
                                            fix: strict.map { "sysctl -w net.ipv4.conf.\($0).rp_filter=2" }.joined(separator: "; ") + " (and net.ipv4.conf.all.rp_filter=2)"))
            }
            if !facts.hasNetAdmin {
                findings.append(HostFinding(.blocking, "capabilities", "no CAP_NET_ADMIN: the path manager cannot set endpoints and routes\(transparent ? ", nor can rules or TPROXY be installed" : "")",
                                            fix: "run as root, or with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE under systemd"))
            } else {
                findings.append(HostFinding(.ok, "capabilities", "CAP_NET_ADMIN"))
            }
        } else {
            findings.append(HostFinding(.ok, "TCP Fast Open", "the server refuses data in the SYN by design (docs/decisions/0009); clients resend the request after the handshake"))
        }
        for manager in facts.otherManagers {
            findings.append(HostFinding(.warning, "other path managers", "\(manager) is running and may add or remove MPTCP endpoints too",
                                        fix: manager == "mptcpd" ? "stop mptcpd, or run mptcp-proxy with --no-path-manager"
                                            : "no mptcp-flags in NetworkManager's connections (nmcli connection modify ID connection.mptcp-flags disabled), or --no-path-manager"))
        }
        if transparent {
            findings.append(facts.nftAvailable ? HostFinding(.ok, "nftables", "nft is installed")
                : HostFinding(.blocking, "nftables", "nft is not installed: --install-rules cannot intercept the LAN", fix: "apt-get install nftables"))
        }
        return findings
    }

    /// What the path manager reports in its log when it starts: the problems of the host that
    /// break multipath whatever it does (MPTCP off, strict rp_filter on an uplink, another
    /// manager of the same endpoints), each with its fix. The limits are left out, because the
    /// manager sets them itself, and so are the capabilities, because without them its first
    /// command fails with the kernel's own reason.
    public static func pathManagerFindings(_ facts: HostFacts) -> [HostFinding] {
        diagnose(facts, role: .client).filter { $0.severity != .ok && ["MPTCP", "rp_filter", "other path managers"].contains($0.check) }
    }

    /// One Info exchange with `server` (the health check of docs/protocol.md), and the
    /// transport it used: MPTCP, or a fallback to TCP (a network that strips MPTCP options).
    public static func probe(_ server: SocketAddress, key: ClientKey, timeoutSeconds: Int = 3) -> HostFinding {
        let name = "server \(server)"
        let fd: Int32
        do {
            fd = try BlockingSocket.connect(to: server, timeoutSeconds: timeoutSeconds, mptcp: true)
        } catch {
            return HostFinding(.blocking, name, "no connection: \(error)", fix: "is the server running and its port open (ss -tlnp on the VPS; its firewall)?")
        }
        defer { close(fd) }
        let probe = ServerEndpoints.infoProbe(key: key)
        var received: [UInt8] = []
        do {
            try probe.request().withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
            var buffer = [UInt8](repeating: 0, count: 512)
            loop: while true {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n < 0 && errno == EINTR { continue }
                if n < 0 { throw SystemError("recv", errno: errno) }
                received += buffer[0..<n]
                switch probe.judge(received, n == 0) {
                case .needMore: if n == 0 { break loop }
                case .passed: break loop
                case .failed(let why):
                    // (A byte search, not String.contains: Foundation's overload would link all of Foundation in.)
                    let fix = why.utf8.firstRange(of: "Not Authorized".utf8) != nil ? "the key id and key in the client's key file must match a line of the server's keys file, and the clocks must agree within a minute" : nil
                    return HostFinding(.blocking, name, "answered, but \(why)", fix: fix)
                }
            }
        } catch {
            return HostFinding(.blocking, name, "the Info exchange failed: \(error)")
        }
        guard case .passed = probe.judge(received, true) else { return HostFinding(.blocking, name, "closed before a whole reply") }
        let info = Socket(fd: fd).mptcpInfo()
        if let info, !info.fallback {
            return HostFinding(.ok, name, "answers the Info exchange over MPTCP")
        }
        return HostFinding(.warning, name, "answers, but over plain TCP: MPTCP fell back (something on the path strips MPTCP options, or MPTCP is off at the server)",
                           fix: "check net.mptcp.enabled on the VPS; try another uplink to find the middlebox")
    }
}
