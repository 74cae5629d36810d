import ConvertProtocol
import DataPlane
@testable import Proxy
import Testing

/// The client's list of servers: which ones new connections go to as evidence arrives, and the
/// Info exchange that checks them. No sockets: outcomes are recorded by hand.
@Suite("Client server endpoints")
struct ServerEndpointsTests {
    let first = SocketAddress(.v4([192, 0, 2, 1]), port: 4443)
    let second = SocketAddress(.v4([192, 0, 2, 2]), port: 4443)
    let key = ClientKey(id: "gw", secret: Array(repeating: 7, count: 32))

    func endpoints(rise: Int = 2, fall: Int = 2) -> (ServerEndpoints, ProxyMetrics) {
        var settings = ServerHealthSettings()
        settings.rise = rise
        settings.fall = fall
        let metrics = ProxyMetrics(role: "client")
        return (ServerEndpoints([first, second], settings: settings, metrics: metrics), metrics)
    }

    @Test("new connections go to the first healthy server; it falls after `fall` failures and rises after `rise` successes")
    func failoverAndReturn() {
        let (servers, metrics) = endpoints()
        #expect(servers.candidates() == [first, second])
        #expect(servers.chosen == first)

        servers.record(first, success: false, evidence: .check, detail: "timeout")
        #expect(servers.chosen == first, "one failure is below fall = 2")
        servers.record(first, success: true, evidence: .connection, detail: "connected")
        servers.record(first, success: false, evidence: .check, detail: "timeout")
        #expect(servers.chosen == first, "a success in between resets the streak")
        servers.record(first, success: false, evidence: .connection, detail: "refused")
        #expect(servers.candidates() == [second])
        #expect(servers.chosen == second)
        #expect(!servers.isUp(first))

        servers.record(first, success: true, evidence: .check, detail: "ok")
        #expect(servers.chosen == second, "one success is below rise = 2")
        servers.record(first, success: true, evidence: .check, detail: "ok")
        #expect(servers.chosen == first, "the preferred server takes new connections again")

        let text = metrics.render()
        #expect(text.contains(#"mptcp_proxy_server_up{role="client",server="192.0.2.1:4443"} 1.0"#))
        #expect(text.contains(#"mptcp_proxy_server_chosen{role="client",server="192.0.2.1:4443"} 1.0"#))
        #expect(text.contains(#"mptcp_proxy_server_chosen{role="client",server="192.0.2.2:4443"} 0.0"#))
        #expect(text.contains(#"mptcp_proxy_server_failovers_total{role="client"} 2"#), "to the second and back: \(text)")
    }

    @Test("with every server down there are no candidates, and the metrics say so")
    func allDown() {
        let (servers, metrics) = endpoints(fall: 1)
        servers.record(first, success: false, evidence: .check, detail: "timeout")
        servers.record(second, success: false, evidence: .check, detail: "timeout")
        #expect(servers.candidates().isEmpty)
        #expect(servers.chosen == nil)
        let text = metrics.render()
        #expect(text.contains(#"mptcp_proxy_server_up{role="client",server="192.0.2.2:4443"} 0.0"#))
        #expect(text.contains(#"mptcp_proxy_server_chosen{role="client",server="192.0.2.2:4443"} 0.0"#))
        #expect(text.contains(#"mptcp_proxy_server_failovers_total{role="client"} 2"#))
    }

    @Test("the upstream refuses at once when no server is healthy: no dial, a network failure the LAN sees as a reset")
    func upstreamWithNoServer() {
        let (servers, _) = endpoints(fall: 1)
        servers.record(first, success: false, evidence: .check, detail: "timeout")
        servers.record(second, success: false, evidence: .check, detail: "timeout")
        var upstream = ConvertUpstream(endpoint: UpstreamEndpoint(servers: [first, second], key: key), servers: servers, connectTimeout: 5_000)
        let step = upstream.start(ConnectRequest(destination: .address(first), originalSource: nil, keyID: nil), wallMilliseconds: 1_000_000)
        guard case .failed(let error) = step else {
            Issue.record("expected an immediate failure, got \(step)")
            return
        }
        #expect(error.code == .networkFailure)
    }

    @Test("the upstream dials the healthy servers one at a time, in order, and blames the ones that did not answer")
    func upstreamPlan() {
        let (servers, _) = endpoints(fall: 1)
        var upstream = ConvertUpstream(endpoint: UpstreamEndpoint(servers: [first, second], key: key), servers: servers, connectTimeout: 5_000)
        let step = upstream.start(ConnectRequest(destination: .address(first), originalSource: nil, keyID: nil), wallMilliseconds: 1_000_000)
        guard case .dial(let plan) = step else {
            Issue.record("expected a dial, got \(step)")
            return
        }
        #expect(plan.candidates == [first, second])
        #expect(plan.exclusive)
        #expect(plan.attemptDelay == servers.settings.attemptTimeout)
        _ = upstream.dialed(.connected(second))
        #expect(servers.candidates() == [second], "the first did not answer within its attempt")
        #expect(upstream.connectedServer == second)
    }

    @Test("the Info probe passes a real server's Info reply and fails an error or a cut reply")
    func infoProbe() throws {
        let probe = ServerEndpoints.infoProbe(key: key)
        let request = probe.request()
        let decoded = try ConvertMessage.decode(request).message
        #expect(decoded.tlvs.contains(.info), "the check asks for Info")
        #expect(!decoded.tlvs.contains { if case .connect = $0 { true } else { false } }, "and nothing else: no destination is reached")

        let reply = try ConvertMessage.info.encoded()
        #expect(probe.judge(reply, false) == .passed)
        #expect(probe.judge(Array(reply.prefix(5)), false) == .needMore)
        if case .failed = probe.judge(Array(reply.prefix(5)), true) {} else { Issue.record("a cut reply must fail") }
        let refusal = try ConvertMessage.failure(.notAuthorized).encoded()
        if case .failed(let why) = probe.judge(refusal, false) {
            #expect(why.contains("refused"))
        } else {
            Issue.record("an error reply must fail the check")
        }
        if case .failed = probe.judge(Array("HTTP/1.1 400".utf8), false) {} else { Issue.record("a non-Convert reply must fail") }
    }
}
