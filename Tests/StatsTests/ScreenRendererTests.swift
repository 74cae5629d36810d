@testable import Stats
import Testing

/// A snapshot like the testbed's gw during an upload: one connection over three paths, a
/// second one idle, endpoints, limits and a few path-manager events.
func exampleSnapshot() -> StatsSnapshot {
    func subflow(_ local: String, _ interface: String, _ kind: String, backup: Bool = false, tx: Double) -> SubflowStats {
        SubflowStats(local: local, remote: "10.9.9.9:4443", interface: interface, interfaceClass: kind, backup: backup,
                     state: "ESTAB", txBitsPerSecond: tx, rxBitsPerSecond: 0.2e6, rttMilliseconds: 41.5,
                     congestionWindow: 160, retransmits: 12, lost: 0, lossPercent: 0.4)
    }
    let busy = ConnectionStats(
        token: 1_004_511_975, local: "10.1.1.1:46642", remote: "10.9.9.9:4443", state: "ESTAB", fallback: false,
        subflowCount: 3, txBitsPerSecond: 84.1e6, rxBitsPerSecond: 0.5e6, bytesSent: 90_000_000, bytesReceived: 1000,
        destination: "10.20.0.2:5201",
        subflows: [subflow("10.1.1.1:46642", "wifi", "wifi", tx: 37.6e6), subflow("10.1.2.1:53047", "eth", "ethernet", tx: 28.2e6),
                   subflow("10.1.3.1:41271", "cell", "cellular", backup: true, tx: 18.8e6)])
    let idle = ConnectionStats(
        token: 77, local: "10.1.2.1:40000", remote: "10.9.9.9:4443", state: "ESTAB", fallback: true, subflowCount: 1,
        txBitsPerSecond: 0, rxBitsPerSecond: 0, bytesSent: 10, bytesReceived: 10, destination: nil,
        subflows: [subflow("10.1.2.1:40000", "eth", "ethernet", tx: 0)])
    let interfaces = [
        InterfaceStats(name: "cell", interfaceClass: "cellular", subflows: 1, txBitsPerSecond: 18.8e6, rxBitsPerSecond: 0.2e6,
                       history: [0, 0, 19e6, 19e6, 19e6]),
        InterfaceStats(name: "eth", interfaceClass: "ethernet", subflows: 2, txBitsPerSecond: 28.2e6, rxBitsPerSecond: 0.2e6,
                       history: [0, 28e6, 28e6, 28e6, 28e6]),
        InterfaceStats(name: "wifi", interfaceClass: "wifi", subflows: 1, txBitsPerSecond: 0, rxBitsPerSecond: 0,
                       history: [38e6, 38e6, 38e6, 38e6, 0]),
    ]
    return StatsSnapshot(
        time: 1_795_000_000, interval: 1, connections: [idle, busy], interfaces: interfaces,
        endpoints: [EndpointStats(id: 1, address: "10.1.1.1", flags: "subflow", interface: "wifi"),
                    EndpointStats(id: 2, address: "10.1.2.1", flags: "subflow", interface: "eth"),
                    EndpointStats(id: 3, address: "10.1.3.1", flags: "subflow,backup", interface: "cell")],
        limits: PathManagerLimits(subflows: 8, addAddrAccepted: 8), listeners: 1,
        events: [EventLine(time: 1_795_000_000, text: "subflow up 10.1.3.1:41271 → 10.9.9.9:4443 (cell) backup"),
                 EventLine(time: 1_795_000_000, text: "subflow down 10.1.1.1:46642 → 10.9.9.9:4443 (wifi)")])
}

@Suite("Screen rendering")
struct ScreenRendererTests {
    static func columns(_ line: String) -> Int { line.count }

    @Test("80x24: fits, header, interfaces with sparklines, connections sorted by rate, busiest selected")
    func standardTerminal() {
        let lines = ScreenRenderer(width: 80, height: 24).screen(exampleSnapshot(), state: ViewState())
        #expect(lines.count <= 24)
        #expect(lines.allSatisfy { $0.count <= 80 }, "\(lines.filter { $0.count > 80 })")
        #expect(lines[0].hasPrefix("mptcp-stats") && lines[0].contains("2 connections, 1 listening") && lines[0].hasSuffix("sort: rate"))
        #expect(lines[1].hasPrefix("endpoints: 1 10.1.1.1 wifi subflow · 2 10.1.2.1 eth subflow"))
        #expect(lines.contains { $0.contains("subflow down 10.1.1.1:46642") })
        let wifi = lines.first { $0.hasPrefix("wifi ") }
        #expect(wifi?.hasSuffix("████") == true, "wifi fell to zero: the sparkline ends in a blank: \(wifi ?? "")")
        #expect(lines.first { $0.hasPrefix("cell ") }?.contains("18.80") == true)
        // The busiest connection first, marked as selected, with its destination.
        let rows = lines.filter { $0.hasPrefix(">") || $0.hasPrefix("  1") || $0.hasPrefix("  77") }
        #expect(rows.first?.hasPrefix("> 1004511975") == true)
        #expect(rows.first?.contains("84.10") == true)
        // Collapsed: no subflow rows until expanded.
        #expect(!lines.contains { $0.contains("└") })
        #expect(lines.last?.hasPrefix("q quit") == true)
    }

    @Test("Enter expands the selected connection into its subflows (interface, class, priority, rates, RTT)")
    func expanded() {
        var state = ViewState()
        let snapshot = exampleSnapshot()
        #expect(state.handle(.enter, visible: state.arrange(snapshot.connections).map(\.token)) == .redraw)
        let lines = ScreenRenderer(width: 130, height: 40).screen(snapshot, state: state)
        let subflows = lines.filter { $0.contains("└") }
        #expect(subflows.count == 3)
        #expect(subflows[0].contains("10.1.1.1:46642") && subflows[0].contains("wifi") && subflows[0].contains("37.60"))
        #expect(subflows[2].contains("cellular") && subflows[2].contains("backup") && subflows[2].contains("41.5"))
        #expect(lines.allSatisfy { $0.count <= 130 })
    }

    @Test("a narrow terminal drops low-priority columns but keeps interface, rates and alignment")
    func narrow() {
        var state = ViewState(expandAll: true)
        state.sort = .token
        let lines = ScreenRenderer(width: 40, height: 12).screen(exampleSnapshot(), state: state)
        #expect(lines.count <= 12)
        #expect(lines.allSatisfy { $0.count <= 40 }, "\(lines.filter { $0.count > 40 })")
        let header = lines.first { $0.hasPrefix("IFACE") }
        #expect(header?.contains("TX Mb/s") == true && header?.contains("CLASS") == false)
        #expect(lines.contains { $0.hasPrefix("wifi ") })
    }

    @Test("a terminal too short for every connection scrolls to keep the selection visible")
    func scrolling() {
        var state = ViewState(expandAll: true)
        let snapshot = exampleSnapshot()
        let visible = state.arrange(snapshot.connections).map(\.token)
        _ = state.handle(.down, visible: visible)
        _ = state.handle(.down, visible: visible)
        #expect(state.selected == 77)
        let lines = ScreenRenderer(width: 80, height: 16).screen(snapshot, state: state)
        #expect(lines.count <= 16)
        #expect(lines.contains { $0.hasPrefix("> 77") })
    }

    @Test("colours only when asked; NO_COLOR output has no escape sequence")
    func colours() {
        let plain = ScreenRenderer(width: 80, height: 24, color: false).screen(exampleSnapshot(), state: ViewState())
        #expect(!plain.joined().contains("\u{1B}"))
        let coloured = ScreenRenderer(width: 80, height: 24, color: true).screen(exampleSnapshot(), state: ViewState())
        #expect(coloured.contains { $0.contains("\u{1B}[7m> 1004511975") })
    }

    @Test("--once table: every connection expanded, nothing interactive, fallback flagged")
    func onceTable() {
        let lines = ScreenRenderer(width: 160, height: Int.max).table(exampleSnapshot())
        #expect(lines.filter { $0.contains("└") }.count == 4)
        #expect(!lines.contains { $0.contains("q quit") || $0.hasPrefix(">") })
        #expect(lines.contains { $0.contains(" 77 ") && $0.contains("fallback") })
        #expect(lines.contains { $0.contains("1004511975") && $0.contains("90.0M/1.0K") && $0.contains("10.20.0.2:5201") })
        var unprivileged = exampleSnapshot()
        unprivileged.events = []
        unprivileged.eventsAvailable = false
        #expect(ScreenRenderer(width: 160, height: Int.max).table(unprivileged).contains("events: not available"))
        #expect(lines.allSatisfy { $0.count <= 160 && !$0.hasSuffix(" ") })
    }

    @Test("no connections: says so instead of an empty table")
    func empty() {
        var snapshot = exampleSnapshot()
        snapshot.connections = []
        snapshot.interfaces = []
        let lines = ScreenRenderer(width: 80, height: 24).screen(snapshot, state: ViewState())
        #expect(lines.contains("(no MPTCP connections)"))
        #expect(lines.contains("(no MPTCP traffic on any interface)"))
    }
}

@Suite("Keys and view state")
struct ViewStateTests {
    @Test("s cycles the sort order; q and Ctrl-C quit")
    func sortAndQuit() {
        var state = ViewState()
        var seen: [ViewState.SortKey] = []
        for _ in 0..<5 { _ = state.handle(.character("s"), visible: []); seen.append(state.sort) }
        #expect(seen == [.subflows, .local, .remote, .token, .rate])
        #expect(state.handle(.character("q"), visible: []) == .quit)
        #expect(state.handle(.interrupt, visible: []) == .quit)
    }

    @Test("/ edits a filter that applies on Enter; Esc cancels the draft, then clears the filter")
    func filter() {
        var state = ViewState()
        let snapshot = exampleSnapshot()
        _ = state.handle(.character("/"), visible: [])
        for character in "10.1.2.1:4000x" { _ = state.handle(.character(character), visible: []) }
        _ = state.handle(.backspace, visible: [])
        #expect(state.filterDraft == "10.1.2.1:4000" && state.filter == "")
        #expect(state.handle(.character("q"), visible: []) == .redraw, "q is text while editing")
        _ = state.handle(.backspace, visible: [])
        _ = state.handle(.enter, visible: [])
        #expect(state.filter == "10.1.2.1:4000" && state.filterDraft == nil)
        #expect(state.arrange(snapshot.connections).map(\.token) == [77])
        state.filter = "cell"  // interface names match too
        #expect(state.arrange(snapshot.connections).map(\.token) == [1_004_511_975])
        _ = state.handle(.escape, visible: [])
        #expect(state.filter == "" && state.arrange(snapshot.connections).count == 2)
    }

    @Test("p pauses and resumes (resume asks for a fresh sample); arrows move within the visible list")
    func pauseAndSelect() {
        var state = ViewState()
        #expect(state.handle(.character("p"), visible: []) == .redraw && state.paused)
        #expect(state.handle(.character(" "), visible: []) == .resume && !state.paused)
        _ = state.handle(.down, visible: [5, 6, 7])
        #expect(state.selected == 5)
        _ = state.handle(.down, visible: [5, 6, 7])
        _ = state.handle(.down, visible: [5, 6, 7])
        _ = state.handle(.down, visible: [5, 6, 7])
        #expect(state.selected == 7)
        _ = state.handle(.up, visible: [5, 6, 7])
        #expect(state.selected == 6)
        _ = state.handle(.character("a"), visible: [])
        #expect(state.isExpanded(5) && state.isExpanded(6))
        _ = state.handle(.enter, visible: [5, 6, 7])
        #expect(!state.isExpanded(6) && state.isExpanded(5))
    }

    @Test("terminal bytes decode to keys: arrows in both forms, lone Esc, Enter, Backspace, Ctrl-C")
    func keyDecoding() {
        let bytes: [UInt8] = [0x1B, 0x5B, 0x41, 0x1B, 0x4F, 0x42, 0x0D, 0x7F, 0x03, 0x71] + [0x1B]
        #expect(KeyDecoder.keys(bytes) == [.up, .down, .enter, .backspace, .interrupt, .character("q"), .escape])
        #expect(KeyDecoder.keys([0xC3, 0xA9]) == [], "non-ASCII bytes are ignored")
    }
}

@Suite("Proxy labels from /metrics")
struct ProxyLabelsTests {
    @Test("connection_info lines map MPTCP socket addresses to destinations; escapes are undone")
    func parse() {
        let text = """
            # HELP mptcp_proxy_connection_info x
            mptcp_proxy_connections_active{role="client"} 2
            mptcp_proxy_connection_info{role="client",local="10.1.1.1:46642",remote="10.9.9.9:4443",peer="10.10.0.2:5000",destination="10.20.0.2:5201",key="k"} 1
            mptcp_proxy_connection_info{local="[2001:db8::1]:9",remote="[2001:db8::2]:4443",destination="odd \\"name\\" \\\\ here"} 1
            mptcp_proxy_connection_info{local="10.1.1.1:1",remote="unterminated} 1
            mptcp_proxy_connection_info{local="10.1.1.1:2"} 1
            """
        let labels = ProxyLabels.parse(text)
        #expect(labels.count == 2)
        #expect(labels[ProxyLabels.key(local: "10.1.1.1:46642", remote: "10.9.9.9:4443")] == "10.20.0.2:5201")
        #expect(labels[ProxyLabels.key(local: "[2001:db8::1]:9", remote: "[2001:db8::2]:4443")] == "odd \"name\" \\ here")
    }
}
