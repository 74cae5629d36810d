/// The interactive monitor's state and its key handling: a small state machine that returns
/// what the loop must do; the loop only carries it out.
public struct ViewState: Sendable, Equatable {
    public enum SortKey: String, CaseIterable, Sendable {
        case rate, subflows, local, remote, token
    }

    public var sort: SortKey = .rate
    public var filter: String = ""
    /// Text being typed after `/`; nil when not editing.
    public var filterDraft: String?
    public var paused = false
    /// The selected connection, by token.
    public var selected: UInt32?
    public var expanded: Set<UInt32> = []
    public var expandAll = false

    public init(sort: SortKey = .rate, filter: String = "", expandAll: Bool = false) {
        self.sort = sort
        self.filter = filter
        self.expandAll = expandAll
    }

    public enum Key: Equatable, Sendable {
        case character(Character)
        case up, down, enter, escape, backspace, interrupt
    }

    public enum Action: Equatable, Sendable {
        case none, redraw, quit
        /// Pause was lifted: sample now rather than at the next tick.
        case resume
    }

    /// - Parameter visible: tokens of the connections on screen, in display order.
    public mutating func handle(_ key: Key, visible: [UInt32]) -> Action {
        if key == .interrupt { return .quit }
        if var draft = filterDraft {
            switch key {
            case .enter: filter = draft; filterDraft = nil
            case .escape: filterDraft = nil
            case .backspace: if !draft.isEmpty { draft.removeLast() }; filterDraft = draft
            case .character(let c): draft.append(c); filterDraft = draft
            default: return .none
            }
            return .redraw
        }
        switch key {
        case .character("q"): return .quit
        case .character("s"):
            let all = SortKey.allCases
            sort = all[(all.firstIndex(of: sort)! + 1) % all.count]
        case .character("/"): filterDraft = filter
        case .escape: filter = ""
        case .character("p"), .character(" "):
            paused.toggle()
            if !paused { return .resume }
        case .character("a"): expandAll.toggle(); expanded = []
        case .up, .character("k"): move(-1, in: visible)
        case .down, .character("j"): move(1, in: visible)
        case .enter, .character("e"):
            guard let token = selected ?? visible.first else { return .none }
            selected = token
            if expanded.contains(token) { expanded.remove(token) } else { expanded.insert(token) }
        default: return .none
        }
        return .redraw
    }

    public func isExpanded(_ token: UInt32) -> Bool { expandAll != expanded.contains(token) }

    private mutating func move(_ step: Int, in visible: [UInt32]) {
        guard !visible.isEmpty else { selected = nil; return }
        guard let current = selected, let index = visible.firstIndex(of: current) else { selected = visible.first; return }
        selected = visible[min(max(index + step, 0), visible.count - 1)]
    }

    /// The connections to show, filtered and sorted.
    public func arrange(_ connections: [ConnectionStats]) -> [ConnectionStats] {
        let needle = filter.lowercased()
        let kept = needle.isEmpty ? connections : connections.filter { connection in
            var haystack = [connection.local, connection.remote, connection.destination ?? "", String(connection.token)]
            for subflow in connection.subflows { haystack += [subflow.local, subflow.remote, subflow.interface] }
            return haystack.contains { $0.lowercased().contains(needle) }
        }
        func rate(_ c: ConnectionStats) -> Double { (c.txBitsPerSecond ?? 0) + (c.rxBitsPerSecond ?? 0) }
        return kept.sorted { a, b in
            switch sort {
            case .rate: return (rate(a), a.token) > (rate(b), b.token)
            case .subflows: return (a.subflowCount, a.token) > (b.subflowCount, b.token)
            case .local: return (a.local, a.token) < (b.local, b.token)
            case .remote: return (a.remote, a.token) < (b.remote, b.token)
            case .token: return a.token < b.token
            }
        }
    }
}
