import DataPlane
@testable import Proxy
import Testing

/// `mptcp-proxy check`'s verdicts on made-up hosts: every condition it knows, one at a time.
@Suite("Host check")
struct HostCheckTests {
    /// A gateway with everything right.
    var healthy: HostFacts {
        var facts = HostFacts()
        facts.mptcpEnabled = 1
        facts.limits = (8, 8)
        facts.tcpFastOpen = 3
        facts.rpFilter = ["wlan0": 2, "eth0": 0]
        facts.hasNetAdmin = true
        facts.nftAvailable = true
        return facts
    }

    func worst(_ findings: [HostFinding]) -> HostFinding.Severity { findings.map(\.severity).max() ?? .ok }

    func finding(_ findings: [HostFinding], _ check: String) -> HostFinding? { findings.first { $0.check == check } }

    @Test("the path manager's start-up report: only what defeats multipath whatever it does")
    func pathManagerReport() {
        #expect(HostCheck.pathManagerFindings(healthy).isEmpty)
        var broken = healthy
        broken.mptcpEnabled = 0
        broken.rpFilter = ["wlan0": 1]
        broken.otherManagers = ["mptcpd"]
        broken.limits = (0, 0)        // the manager sets these itself: not reported
        broken.tcpFastOpen = 0        // the proxy's business, not the manager's
        let report = HostCheck.pathManagerFindings(broken)
        #expect(report.map(\.check) == ["MPTCP", "rp_filter", "other path managers"])
        #expect(report.first?.severity == .blocking)
        #expect(report.allSatisfy { $0.fix != nil })
    }

    @Test("a healthy gateway and a healthy VPS: all ok")
    func healthyHosts() {
        #expect(worst(HostCheck.diagnose(healthy, role: .client, transparent: true)) == .ok)
        #expect(worst(HostCheck.diagnose(healthy, role: .server)) == .ok)
    }

    @Test("each misconfiguration is reported with its severity and a fix")
    func misconfigurations() {
        var facts = healthy
        facts.mptcpEnabled = 0
        var found = finding(HostCheck.diagnose(facts, role: .client), "MPTCP")
        #expect(found?.severity == .blocking && found?.fix?.contains("net.mptcp.enabled=1") == true)
        facts.mptcpEnabled = nil
        #expect(finding(HostCheck.diagnose(facts, role: .server), "MPTCP")?.severity == .blocking)

        facts = healthy
        facts.limits = (0, 0)
        found = finding(HostCheck.diagnose(facts, role: .client), "MPTCP limits")
        #expect(found?.severity == .warning && found?.fix?.contains("ip mptcp limits set") == true)

        facts = healthy
        facts.tcpFastOpen = 2
        #expect(finding(HostCheck.diagnose(facts, role: .client), "TCP Fast Open")?.severity == .warning)
        #expect(finding(HostCheck.diagnose(facts, role: .server), "TCP Fast Open")?.severity == .ok, "the server refuses SYN data by design")

        facts = healthy
        facts.rpFilter["wwan0"] = 1
        found = finding(HostCheck.diagnose(facts, role: .client), "rp_filter")
        #expect(found?.severity == .warning && found?.detail.contains("wwan0") == true && found?.fix?.contains("net.ipv4.conf.wwan0.rp_filter=2") == true)

        facts = healthy
        facts.otherManagers = ["mptcpd", "NetworkManager"]
        let managers = HostCheck.diagnose(facts, role: .client).filter { $0.check == "other path managers" }
        #expect(managers.count == 2 && managers.allSatisfy { $0.severity == .warning })

        facts = healthy
        facts.hasNetAdmin = false
        #expect(finding(HostCheck.diagnose(facts, role: .client), "capabilities")?.severity == .blocking)

        facts = healthy
        facts.nftAvailable = false
        #expect(finding(HostCheck.diagnose(facts, role: .client, transparent: true), "nftables")?.severity == .blocking)
        #expect(finding(HostCheck.diagnose(facts, role: .client, transparent: false), "nftables") == nil, "only asked for with interception")
    }
}
