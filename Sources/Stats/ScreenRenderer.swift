import Glibc

/// Draws a snapshot as lines of text that fit `width` × `height`: a header (endpoints, limits,
/// recent path-manager events), the interfaces with a throughput sparkline, and the
/// connections, each expandable into its subflows. Columns are dropped by priority when the
/// terminal is narrow, never wrapped. Pure: the same input gives the same text, which is how
/// the tests check it.
public struct ScreenRenderer: Sendable {
    public var width: Int
    public var height: Int
    public var color: Bool
    /// Where the monitor looks, for the title (for example "netns gw").
    public var scope: String

    public init(width: Int, height: Int, color: Bool = false, scope: String = "") {
        self.width = max(width, 20)
        self.height = max(height, 5)
        self.color = color
        self.scope = scope
    }

    /// The interactive screen: exactly `height` lines or fewer, each at most `width` columns.
    public func screen(_ snapshot: StatsSnapshot, state: ViewState) -> [String] {
        var top = [titleLine(snapshot, state: state)]
        top.append(fitText(endpointsLine(snapshot)))
        for note in snapshot.notes { top.append(paint(fitText("! " + note), .yellow)) }
        let eventRows = height >= 20 ? 3 : (height >= 14 ? 1 : 0)
        top += eventLines(snapshot, count: eventRows)
        let interfaces = interfaceLines(snapshot)
        let footer = [paint(fitText(state.filterDraft.map { "filter: \($0)_  (Enter apply, Esc cancel)" }
            ?? "q quit  s sort  / filter  p pause  ↑↓ select  Enter expand  a all"), .dim)]
        var lines = top + [""] + interfaces + [""]
        let room = height - lines.count - footer.count
        lines += connectionLines(snapshot, state: state, room: room, interactive: true)
        lines = Array(lines.prefix(height - footer.count))
        return lines + footer
    }

    /// The `--once` table: everything, every connection expanded, no height limit.
    public func table(_ snapshot: StatsSnapshot) -> [String] {
        let state = ViewState(expandAll: true)
        var lines = [titleLine(snapshot, state: nil), fitText(endpointsLine(snapshot))]
        lines += snapshot.notes.map { fitText("! " + $0) }
        lines += eventLines(snapshot, count: 5)
        lines += [""] + interfaceLines(snapshot) + [""]
        lines += connectionLines(snapshot, state: state, room: Int.max, interactive: false)
        return lines
    }

    // MARK: header

    private func titleLine(_ snapshot: StatsSnapshot, state: ViewState?) -> String {
        var left = "mptcp-stats"
        if !scope.isEmpty { left += "  \(scope)" }
        left += "  \(clock(snapshot.time))"
        let count = snapshot.connections.count
        left += "  \(count) connection\(count == 1 ? "" : "s")"
        if snapshot.listeners > 0 { left += ", \(snapshot.listeners) listening" }
        var right: [String] = []
        if let state {
            right.append("sort: \(state.sort.rawValue)")
            if !state.filter.isEmpty { right.append("filter: \(state.filter)") }
            if state.paused { right.append("PAUSED") }
        }
        let rightText = right.joined(separator: "  ")
        if rightText.isEmpty { return paint(fitText(left), .bold) }
        let gap = width - left.count - rightText.count
        let line = gap >= 2 ? left + String(repeating: " ", count: gap) + rightText : left + "  " + rightText
        return paint(fitText(line), .bold)
    }

    private func endpointsLine(_ snapshot: StatsSnapshot) -> String {
        var text = "endpoints: "
        if let endpoints = snapshot.endpoints {
            text += endpoints.isEmpty ? "none" : endpoints.map { endpoint in
                "\(endpoint.id) \(endpoint.address)\(endpoint.interface.map { " \($0)" } ?? "") \(endpoint.flags)"
            }.joined(separator: " · ")
        } else {
            text += "unknown"
        }
        if let limits = snapshot.limits {
            text += "  limits: subflows \(limits.subflows) add_addr \(limits.addAddrAccepted)"
        }
        return text
    }

    private func eventLines(_ snapshot: StatsSnapshot, count: Int) -> [String] {
        guard count > 0 else { return [] }
        let recent = snapshot.events.suffix(count)
        if recent.isEmpty { return [fitText(snapshot.eventsAvailable ? "events: none yet" : "events: not available")] }
        return recent.map { fitText("\(clock($0.time)) \($0.text)") }
    }

    // MARK: interfaces

    private func interfaceLines(_ snapshot: StatsSnapshot) -> [String] {
        let columns = [Column("IFACE", 8, priority: 9), Column("CLASS", 8, priority: 4), Column("SF", 3, right: true, priority: 5),
                       Column("TX Mb/s", 9, right: true, priority: 8), Column("RX Mb/s", 9, right: true, priority: 8),
                       Column("HISTORY (tx+rx)", 10, priority: 6, flexible: true)]
        let layout = TableLayout(columns, width: width)
        var lines = [paint(layout.row(columns.map(\.title)), .bold)]
        let scale = snapshot.interfaces.flatMap(\.history).max() ?? 0
        for interface in snapshot.interfaces {
            let spark = sparkline(interface.history, width: layout.width(of: 5), scale: scale)
            lines.append(layout.row([interface.name, interface.interfaceClass, "\(interface.subflows)",
                                     megabits(interface.txBitsPerSecond), megabits(interface.rxBitsPerSecond), spark],
                                    paints: color ? [5: .green] : [:]))
        }
        if snapshot.interfaces.isEmpty { lines.append(fitText("(no MPTCP traffic on any interface)")) }
        return lines
    }

    // MARK: connections

    private func connectionLines(_ snapshot: StatsSnapshot, state: ViewState, room: Int, interactive: Bool) -> [String] {
        guard room > 1 else { return [] }
        let columns = [Column(" ", 1, priority: 10), Column("TOKEN", 10, priority: 6), Column("LOCAL", 21, priority: 9),
                       Column("REMOTE", 21, priority: 8), Column("STATE", 10, priority: 3), Column("SF", 3, right: true, priority: 9),
                       Column("TX Mb/s", 9, right: true, priority: 9), Column("RX Mb/s", 9, right: true, priority: 9),
                       Column("SENT/RECEIVED", 15, right: true, priority: 3),
                       Column("FLAGS", 8, priority: 5), Column("DESTINATION", 21, priority: 4, flexible: true)]
        let layout = TableLayout(columns, width: width)
        let subflowColumns = [Column("", 3, priority: 10), Column("LOCAL", 21, priority: 9), Column("REMOTE", 21, priority: 4),
                              Column("IFACE", 6, priority: 9), Column("CLASS", 8, priority: 3), Column("PRIO", 6, priority: 8),
                              Column("STATE", 10, priority: 3), Column("TX", 9, right: true, priority: 9),
                              Column("RX", 9, right: true, priority: 9), Column("RTT ms", 7, right: true, priority: 7),
                              Column("CWND", 5, right: true, priority: 6), Column("RETR", 5, right: true, priority: 5),
                              Column("LOSS%", 6, right: true, priority: 6)]
        let subflowLayout = TableLayout(subflowColumns, width: width)

        let arranged = state.arrange(snapshot.connections)
        var blocks: [(token: UInt32, lines: [String])] = []
        for connection in arranged {
            let selected = interactive && connection.token == (state.selected ?? arranged.first?.token)
            var flags: [String] = []
            if connection.fallback { flags.append("fallback") }
            let row = layout.row([selected ? ">" : " ", String(connection.token), connection.local, connection.remote, connection.state,
                                  "\(connection.subflowCount)", megabits(connection.txBitsPerSecond), megabits(connection.rxBitsPerSecond),
                                  "\(bytes(connection.bytesSent))/\(bytes(connection.bytesReceived))",
                                  flags.joined(separator: ","), connection.destination ?? ""])
            var lines = [selected ? paint(row, .reverse) : (connection.fallback ? paint(row, .red) : row)]
            if state.isExpanded(connection.token) || !interactive {
                if !connection.subflows.isEmpty { lines.append(paint(subflowLayout.row(subflowColumns.map(\.title)), .dim)) }
                for subflow in connection.subflows {
                    let row = subflowLayout.row([" └", subflow.local, subflow.remote, subflow.interface, subflow.interfaceClass,
                                                 subflow.backup ? "backup" : "active", subflow.state,
                                                 megabits(subflow.txBitsPerSecond), megabits(subflow.rxBitsPerSecond),
                                                 NumberText.fixed(subflow.rttMilliseconds, digits: 1), "\(subflow.congestionWindow)",
                                                 "\(subflow.retransmits)", subflow.lossPercent.map { NumberText.fixed($0, digits: 1) } ?? "-"])
                    lines.append(subflow.backup ? paint(row, .yellow) : row)
                }
            }
            blocks.append((connection.token, lines))
        }
        var out = [paint(layout.row(columns.map(\.title)), .bold)]
        if blocks.isEmpty {
            out.append(fitText(snapshot.connections.isEmpty ? "(no MPTCP connections)" : "(no connection matches the filter)"))
            return out
        }
        // Scroll so the selected connection's block is on screen.
        let budget = room - 1
        let selectedIndex = blocks.firstIndex { $0.token == state.selected } ?? 0
        var start = 0
        while start < selectedIndex && blocks[start...selectedIndex].reduce(0, { $0 + $1.lines.count }) > budget { start += 1 }
        for block in blocks[start...] {
            for line in block.lines where out.count <= budget { out.append(line) }
        }
        return out
    }

    // MARK: text helpers

    private func fitText(_ text: String) -> String { text.count <= width ? text : String(text.prefix(width - 1)) + "…" }

    private func megabits(_ bitsPerSecond: Double?) -> String {
        guard let bitsPerSecond else { return "-" }
        let value = bitsPerSecond / 1e6
        return NumberText.fixed(value, digits: value >= 100 ? 1 : 2)
    }

    /// 1.2K, 34.5M, 6.7G: totals in little room.
    private func bytes(_ count: UInt64) -> String {
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]
        for (scale, suffix) in units where Double(count) >= scale {
            return NumberText.fixed(Double(count) / scale, digits: 1) + suffix
        }
        return "\(count)"
    }

    private func clock(_ unixSeconds: Double) -> String {
        var seconds = time_t(unixSeconds)
        var parts = tm()
        localtime_r(&seconds, &parts)
        return [parts.tm_hour, parts.tm_min, parts.tm_sec].map { NumberText.padded(Int($0), width: 2) }.joined(separator: ":")
    }

    /// One block character per sample, newest on the right, scaled to `scale`.
    private func sparkline(_ values: [Double], width: Int, scale: Double) -> String {
        let blocks: [Character] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]
        let shown = values.suffix(width)
        return String(shown.map { value -> Character in
            guard scale > 0, value > 0 else { return " " }
            return blocks[min(blocks.count - 1, Int(value / scale * Double(blocks.count - 1) + 0.5))]
        })
    }

    enum Paint: String {
        case bold = "1", dim = "2", reverse = "7", red = "31", green = "32", yellow = "33"

        /// `text` wrapped in this SGR attribute and a reset.
        func apply(_ text: String) -> String { "\u{1B}[\(rawValue)m\(text)\u{1B}[0m" }
    }

    private func paint(_ text: String, _ paint: Paint) -> String {
        color ? paint.apply(text) : text
    }
}

/// A column of a table: a title, a width, and a priority (lower is dropped first when the
/// terminal is too narrow). A flexible column takes what is left.
struct Column {
    var title: String
    var width: Int
    var right: Bool
    var priority: Int
    var flexible: Bool

    init(_ title: String, _ width: Int, right: Bool = false, priority: Int, flexible: Bool = false) {
        self.title = title
        self.width = width
        self.right = right
        self.priority = priority
        self.flexible = flexible
    }
}

/// Which columns fit a width, decided from the widths alone so every row of a table drops
/// the same columns and stays aligned.
struct TableLayout {
    private var columns: [Column]
    private var kept: [Int]
    private var widths: [Int: Int] = [:]

    init(_ columns: [Column], width: Int) {
        self.columns = columns
        var kept = Array(columns.indices)
        func total(_ set: [Int]) -> Int { set.reduce(0) { $0 + columns[$1].width } + max(0, set.count - 1) }
        while total(kept) > width, let drop = kept.filter({ $0 != 0 }).min(by: { columns[$0].priority < columns[$1].priority }) {
            kept.removeAll { $0 == drop }
        }
        self.kept = kept
        for index in kept { widths[index] = columns[index].width }
        if let flexible = kept.last(where: { columns[$0].flexible }) { widths[flexible]! += max(0, width - total(kept)) }
    }

    func width(of index: Int) -> Int { widths[index] ?? 0 }

    func row(_ cells: [String], paints: [Int: ScreenRenderer.Paint] = [:]) -> String {
        var parts: [String] = []
        for index in kept {
            let width = widths[index]!
            var text = index < cells.count ? cells[index] : ""
            if text.count > width { text = width > 1 ? String(text.prefix(width - 1)) + "…" : String(text.prefix(width)) }
            let pad = String(repeating: " ", count: width - text.count)
            text = columns[index].right ? pad + text : text + pad
            if let paint = paints[index] { text = paint.apply(text) }
            parts.append(text)
        }
        var line = parts.joined(separator: " ")
        while line.last == " " { line.removeLast() }
        return line
    }
}
