import ArgumentParser
import DataPlane
import FoundationEssentials
import Glibc
import PathManager
import Stats

/// `mptcp-stats`: a live view of every MPTCP connection and its subflows on this host.
/// Thin: options and wiring; the work is in the Stats library.
@main
struct MPTCPStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mptcp-stats",
        abstract: "Live view of MPTCP connections, their subflows, and per-interface throughput.",
        discussion: """
            Keys: q quit, s sort (rate, subflows, local, remote, token), / filter by address, port or \
            interface, Esc clear filter, p pause, ↑/↓ select, Enter expand a connection, a expand all.
            Colours unless NO_COLOR is set or TERM=dumb. Reads the kernel directly (sock_diag, mptcp_pm);
            subflow details and path-manager events need CAP_NET_ADMIN.
            """)

    @Flag(help: "Print one table (two samples --interval apart) and exit.")
    var once = false

    @Flag(help: "Print JSON: one snapshot, or one per line every --interval when --interval is given.")
    var json = false

    @Option(help: "Seconds between samples (default 1).")
    var interval: Double?

    @Option(help: "With --json --interval: stop after this many snapshots.")
    var count: Int?

    @Option(help: "Look inside this network namespace (ip netns; needs root).")
    var netns: String?

    @Option(help: "A proxy's metrics URL (http://ADDR:PORT/metrics): label connections with their destination.")
    var proxy: String?

    @Option(name: .customLong("class"), help: "Interface class override IF=wifi|ethernet|cellular|other (repeatable).")
    var classes: [String] = []

    @Option(help: "Initial sort: rate, subflows, local, remote, token.")
    var sort: String = "rate"

    @Option(help: "Initial filter (address, port, interface or destination substring).")
    var filter: String = ""

    @Flag(help: "Start with every connection expanded into its subflows.")
    var expand = false

    @Flag(help: "No colours (as does a non-empty NO_COLOR).")
    var noColor = false

    func validate() throws {
        if let interval, !(0.05...3600).contains(interval) { throw ValidationError("--interval must be 0.05...3600 seconds") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if count != nil && !(json && interval != nil) { throw ValidationError("--count needs --json --interval") }
        if once && json { throw ValidationError("--once and --json are alternatives") }
        if ViewState.SortKey(rawValue: sort) == nil { throw ValidationError("--sort \(sort): one of rate, subflows, local, remote, token") }
        _ = try classifier()
        if let proxy, !proxy.hasPrefix("http://") { throw ValidationError("--proxy \(proxy): expected http://ADDR:PORT/metrics") }
    }

    func run() throws {
        if let netns {
            do { try NetworkNamespace(netns).enterOnCurrentThread() } catch {
                throw ValidationError("--netns \(netns): \(error)")
            }
        }
        let classifier = try classifier()
        let noColorEnvironment = ProcessInfo.processInfo.environment["NO_COLOR"].map { !$0.isEmpty } ?? false
        let dumbTerminal = ProcessInfo.processInfo.environment["TERM"] == "dumb"
        let options = MonitorOptions(
            interval: interval ?? 1, scope: netns.map { "netns \($0)" } ?? "", color: !noColor && !noColorEnvironment && !dumbTerminal,
            proxyURL: proxy, classifier: classifier,
            initialState: ViewState(sort: ViewState.SortKey(rawValue: sort) ?? .rate, filter: filter, expandAll: expand))
        let monitor = try MPTCPStatsCommand.monitor(options)

        if once {
            let snapshot = try monitor.measure()
            let lines = ScreenRenderer(width: 160, height: Int.max, color: false, scope: options.scope).table(snapshot)
            print(lines.joined(separator: "\n"))
        } else if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            func emit(_ snapshot: StatsSnapshot) {
                if let data = try? encoder.encode(snapshot) { print(String(decoding: data, as: UTF8.self)) }
                fflush(stdout)
            }
            if interval != nil { try monitor.stream(count: count, emit) } else { emit(try monitor.measure()) }
        } else {
            try monitor.runInteractive()
        }
    }

    private func classifier() throws -> InterfaceClassifier {
        do { return try InterfaceClassifier(parsingOverrides: classes) } catch { throw ValidationError("--class \(error)") }
    }

    private static func monitor(_ options: MonitorOptions) throws -> StatsMonitor {
        do { return try StatsMonitor(options: options) } catch {
            throw ValidationError("cannot read the kernel's MPTCP state: \(error)")
        }
    }
}
