import DataPlane
import Synchronization

/// What a proxy exports at `/metrics` (Prometheus text): open connections, ended connections
/// by reason, relayed bytes, and one `mptcp_proxy_connection_info` line per relaying
/// connection naming its MPTCP socket's addresses, so `mptcp-stats --proxy` can label the
/// kernel's connections with their destination. Written by the loops, read by the metrics
/// server's thread.
public final class ProxyMetrics: Sendable {
    public struct LiveConnection: Sendable, Equatable {
        public var peer: String
        public var destination: String
        public var keyID: String?
        /// The MPTCP socket's local and remote address, as sock_diag shows them.
        public var mptcpLocal: String
        public var mptcpRemote: String
    }

    private struct State {
        var live: [ObjectIdentifier: LiveConnection] = [:]
        var ended: [String: UInt64] = [:]
        var bytesUp: UInt64 = 0
        var bytesDown: UInt64 = 0
    }

    public let role: String
    private let state = Mutex(State())
    private let active: ActiveCounter
    /// Whether anyone serves these metrics: until then relaying connections are not recorded,
    /// so a proxy without /metrics does no per-connection address lookups for them.
    private let exporting = Atomic<Bool>(false)

    init(role: String, active: ActiveCounter) {
        self.role = role
        self.active = active
    }

    /// Starts recording relaying connections (called when a metrics server starts).
    public func startExporting() { exporting.store(true, ordering: .relaxed) }

    var isExporting: Bool { exporting.load(ordering: .relaxed) }

    func relayStarted(_ id: ObjectIdentifier, _ connection: LiveConnection) {
        state.withLock { $0.live[id] = connection }
    }

    func ended(_ id: ObjectIdentifier, _ record: ConnectionRecord) {
        // The reason's kind, without its details, keeps the label set small.
        let reason = "\(record.reason)".split(separator: ":").first.map(String.init) ?? "unknown"
        state.withLock {
            $0.live[id] = nil
            $0.ended[reason, default: 0] += 1
            $0.bytesUp += record.bytesUp
            $0.bytesDown += record.bytesDown
        }
    }

    public func render() -> String {
        let snapshot = state.withLock { $0 }
        let role = label(self.role)
        var text = """
            # HELP mptcp_proxy_connections_active Proxied connections open now (handshaking or relaying).
            # TYPE mptcp_proxy_connections_active gauge
            mptcp_proxy_connections_active{role="\(role)"} \(active.count)
            # HELP mptcp_proxy_connections_ended_total Proxied connections ended, by reason.
            # TYPE mptcp_proxy_connections_ended_total counter

            """
        for (reason, count) in snapshot.ended.sorted(by: { $0.key < $1.key }) {
            text += "mptcp_proxy_connections_ended_total{role=\"\(role)\",reason=\"\(label(reason))\"} \(count)\n"
        }
        text += """
            # HELP mptcp_proxy_relayed_bytes_total Bytes relayed by ended connections (up: towards the destination).
            # TYPE mptcp_proxy_relayed_bytes_total counter
            mptcp_proxy_relayed_bytes_total{role="\(role)",direction="up"} \(snapshot.bytesUp)
            mptcp_proxy_relayed_bytes_total{role="\(role)",direction="down"} \(snapshot.bytesDown)
            # HELP mptcp_proxy_connection_info A relaying connection: its MPTCP socket (local, remote), peer and destination.
            # TYPE mptcp_proxy_connection_info gauge

            """
        for connection in snapshot.live.values.sorted(by: { $0.mptcpLocal < $1.mptcpLocal }) {
            text += "mptcp_proxy_connection_info{role=\"\(role)\",local=\"\(label(connection.mptcpLocal))\",remote=\"\(label(connection.mptcpRemote))\","
                + "peer=\"\(label(connection.peer))\",destination=\"\(label(connection.destination))\",key=\"\(label(connection.keyID ?? ""))\"} 1\n"
        }
        return text
    }

    /// Prometheus label-value escaping: backslash, double quote, newline.
    private func label(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
