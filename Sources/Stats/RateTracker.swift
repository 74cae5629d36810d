import DataPlane
import MPTCPKernel
import PathManager

/// Turns successive kernel samples into a snapshot: per-subflow and per-connection rates
/// from byte-counter deltas (sockets are followed by their kernel cookie), subflows grouped
/// under their connection by token, interfaces named and classified, and a short per-interface
/// history so a handover shows as one line falling while another rises. Pure: no I/O but the
/// classifier's sysfs reads (cached).
public struct RateTracker {
    public var classifier: InterfaceClassifier
    public var historyLength: Int

    private struct Counters {
        var time: UInt64
        var tx: UInt64
        var rx: UInt64
        var retransmits: UInt32
        var segmentsOut: UInt32
    }
    private var previous: [UInt64: Counters] = [:]
    private var previousTime: UInt64?
    private var history: [String: [Double]] = [:]
    private var classes: [String: InterfaceClass] = [:]

    public init(classifier: InterfaceClassifier = InterfaceClassifier(), historyLength: Int = 60) {
        self.classifier = classifier
        self.historyLength = historyLength
    }

    /// - Parameters:
    ///   - wallTime: Unix seconds of the sample, for display.
    ///   - labels: proxied destinations by `ProxyLabels.key(local:remote:)` of the MPTCP socket.
    public mutating func update(_ sample: KernelSample, wallTime: Double, events: [EventLine] = [], eventsAvailable: Bool = true,
                                labels: [String: String] = [:], notes: [String] = []) -> StatsSnapshot {
        var seen: [UInt64: Counters] = [:]
        let interval = previousTime.map { Double(sample.time &- $0) / 1e6 } ?? 0

        func rates(_ cookie: UInt64, tx: UInt64, rx: UInt64, retransmits: UInt32 = 0, segmentsOut: UInt32 = 0)
            -> (tx: Double?, rx: Double?, loss: Double?) {
            let now = Counters(time: sample.time, tx: tx, rx: rx, retransmits: retransmits, segmentsOut: segmentsOut)
            seen[cookie] = now
            guard let before = previous[cookie], now.time > before.time, tx >= before.tx, rx >= before.rx else { return (nil, nil, nil) }
            let seconds = Double(now.time - before.time) / 1e6
            let sent = now.segmentsOut &- before.segmentsOut
            let resent = now.retransmits &- before.retransmits
            let loss: Double? = sent > 0 && resent <= sent ? Double(resent) / Double(sent) * 100 : (sent == 0 ? 0 : nil)
            return (Double(tx - before.tx) * 8 / seconds, Double(rx - before.rx) * 8 / seconds, loss)
        }


        var perInterface: [String: (tx: Double, rx: Double, subflows: Int)] = [:]
        let subflowsByToken = Dictionary(grouping: sample.subflows) { $0.subflow?.localToken ?? 0 }
        var connections: [ConnectionStats] = []
        for connection in sample.connections {
            let info = connection.mptcp
            let token = info?.token ?? 0
            let data = rates(connection.cookie, tx: info?.bytesAcked ?? 0, rx: info?.bytesReceived ?? 0)
            let members = (subflowsByToken[token] ?? []).sorted {
                ($0.subflow?.isJoin ?? false ? 1 : 0, $0.subflow?.localID ?? 0, $0.local.port) <
                ($1.subflow?.isJoin ?? false ? 1 : 0, $1.subflow?.localID ?? 0, $1.local.port)
            }
            var subflows: [SubflowStats] = []
            for member in members {
                let tcp = member.tcp ?? DiagSocket.TCPCounters()
                let measured = rates(member.cookie, tx: tcp.bytesAcked, rx: tcp.bytesReceived,
                                     retransmits: tcp.totalRetransmits, segmentsOut: tcp.segmentsOut)
                let name = sample.interface(of: member)?.name ?? "?"
                let kind = interfaceClass(name)
                var total = perInterface[name] ?? (0, 0, 0)
                total.tx += measured.tx ?? 0
                total.rx += measured.rx ?? 0
                total.subflows += 1
                perInterface[name] = total
                subflows.append(SubflowStats(
                    local: "\(member.local)", remote: "\(member.remote)", interface: name, interfaceClass: kind,
                    backup: member.subflow.map { $0.localBackup || $0.remoteBackup } ?? false, state: "\(member.state)",
                    txBitsPerSecond: measured.tx, rxBitsPerSecond: measured.rx,
                    rttMilliseconds: Double(tcp.rttMicroseconds) / 1000, congestionWindow: tcp.congestionWindow,
                    retransmits: tcp.totalRetransmits, lost: tcp.lost, lossPercent: measured.loss))
            }
            let local = "\(connection.local)", remote = "\(connection.remote)"
            connections.append(ConnectionStats(
                token: token, local: local, remote: remote, state: "\(connection.state)",
                fallback: info?.fallback ?? false, subflowCount: max(subflows.count, info?.subflowsTotal ?? 0),
                txBitsPerSecond: data.tx, rxBitsPerSecond: data.rx,
                bytesSent: info?.bytesSent ?? 0, bytesReceived: info?.bytesReceived ?? 0,
                destination: labels[ProxyLabels.key(local: local, remote: remote)], subflows: subflows))
        }

        // Interfaces: those carrying subflows, those with an endpoint, and those seen recently.
        var names = Set(perInterface.keys).union(history.keys)
        for endpoint in sample.endpoints ?? [] {
            if let interface = sample.interfaces.withIndex(endpoint.interfaceIndex) ?? sample.interfaces.owning(endpoint.address) {
                names.insert(interface.name)
            }
        }
        var interfaces: [InterfaceStats] = []
        for name in names.sorted() {
            let total = perInterface[name] ?? (0, 0, 0)
            var line = history[name] ?? []
            line.append(total.tx + total.rx)
            if line.count > historyLength { line.removeFirst(line.count - historyLength) }
            history[name] = line
            interfaces.append(InterfaceStats(name: name, interfaceClass: interfaceClass(name), subflows: total.subflows,
                                             txBitsPerSecond: total.tx, rxBitsPerSecond: total.rx, history: line))
        }
        previous = seen
        previousTime = sample.time

        let endpoints = sample.endpoints?.map { endpoint in
            EndpointStats(id: endpoint.id, address: "\(endpoint.address)", flags: "\(endpoint.flags)",
                          interface: sample.interfaces.withIndex(endpoint.interfaceIndex)?.name)
        }
        return StatsSnapshot(time: wallTime, interval: interval, connections: connections, interfaces: interfaces,
                             endpoints: endpoints, limits: sample.limits, listeners: sample.listeners,
                             events: events, eventsAvailable: eventsAvailable, notes: notes)
    }

    private mutating func interfaceClass(_ name: String) -> String {
        if name == "?" { return "?" }
        if let known = classes[name] { return known.rawValue }
        let found = classifier.classify(name)
        classes[name] = found
        return found.rawValue
    }
}
