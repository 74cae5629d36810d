import ArgumentParser
import ConvertProtocol
import DataPlane
import Glibc
import Logging
import PathManager
import Proxy

@main
struct MPTCPProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mptcp-proxy",
        abstract: "Multipath TCP aggregating proxy: plain TCP in, MPTCP across every uplink, plain TCP out.",
        subcommands: [ClientCommand.self, ServerCommand.self, PathManagerCommand.self])
}

/// Options every long-running subcommand shares.
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Event loops (threads); default: one per core.")
    var loops: Int?

    @Option(help: "On SIGTERM/SIGINT, let running connections finish for this many milliseconds.")
    var drainTimeoutMs: UInt64 = 10_000

    @Option(help: "Handshake deadline in milliseconds (request, connect and reply).")
    var handshakeTimeoutMs: UInt64?

    @Option(help: "Idle deadline in milliseconds (no byte in either direction).")
    var idleTimeoutMs: UInt64?

    @Option(help: "Run inside this network namespace (ip netns).")
    var netns: String?

    @Option(help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (client and server; mptcp-stats --proxy reads it).")
    var metrics: String?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
        if let loops, !(1...256).contains(loops) { throw ValidationError("--loops must be 1...256") }
        if let metrics { _ = try parseAddress(metrics, option: "--metrics") }
    }

    /// Starts the metrics server of `service` at --metrics, else at the configuration's address.
    func startMetrics(_ service: ProxyService, configured: SocketAddress?) throws -> MetricsServer? {
        guard let address = try metrics.map({ try parseAddress($0, option: "--metrics") }) ?? configured else { return nil }
        let server = try MetricsServer(listen: address, namespace: netns.map(NetworkNamespace.init), metrics: service.metrics)
        server.start(logger: service.logger)
        return server
    }

    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { name in
            var handler = StreamLogHandler.standardError(label: name)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }

    func apply(timeouts: inout ConnectionTimeouts, loops: inout Int) {
        if let value = handshakeTimeoutMs { timeouts.handshake = value }
        if let value = idleTimeoutMs { timeouts.idle = value }
        if let value = self.loops { loops = value }
    }

    /// Blocks SIGINT/SIGTERM in every thread (loop threads inherit the mask), starts the
    /// service, waits for a signal, then drains and stops it.
    func run(_ service: ProxyService, metrics configured: SocketAddress?) throws {
        var metricsServer: MetricsServer?
        try runUntilSignal(start: {
            try service.start()
            metricsServer = try startMetrics(service, configured: configured)
        }, stop: { drain in
            service.logger.info("stop accepting, drain for up to \(drain) ms")
            service.shutdown(drainTimeout: drain)
            metricsServer?.stop()
        }, logger: service.logger)
    }

    /// Blocks SIGINT/SIGTERM in every thread (threads started later inherit the mask), starts,
    /// waits for a signal, then stops.
    func runUntilSignal(start: () throws -> Void, stop: (UInt64) -> Void, logger: Logger) throws {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)
        raiseOpenFileLimit()
        try start()
        var received: Int32 = 0
        sigwait(&signals, &received)
        logger.info("received \(received == SIGTERM ? "SIGTERM" : "SIGINT")")
        stop(drainTimeoutMs)
    }
}

func parseAddress(_ text: String, option: String) throws -> SocketAddress {
    do {
        return try SocketAddress(parsing: text)
    } catch {
        throw ValidationError("\(option): \(error)")
    }
}

struct ClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client",
        abstract: "Gateway side: accept plain TCP and carry each connection over MPTCP to the server.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Configuration file (TOML subset; see docs/configuration.md). Options below override it.")
    var config: String?

    @Option(help: "Listen for plain TCP on ADDR:PORT (repeat, paired in order with --to).")
    var listen: [String] = []

    @Option(help: "Destination HOST:PORT for the matching --listen (repeatable).")
    var to: [String] = []

    @Option(help: "Server endpoint ADDR:PORT.")
    var server: String?

    @Option(help: "File with this client's key: one line `ID HEXKEY`.")
    var keyFile: String?

    @Flag(help: "Dial the server with plain TCP instead of MPTCP.")
    var noMptcp = false

    @Flag(help: "Do not send the request in the SYN (TCP Fast Open).")
    var noFastOpen = false

    @Flag(help: "Do not run the built-in path manager (endpoints are managed elsewhere).")
    var noPathManager = false

    @OptionGroup var paths: PathManagerOptions

    func validate() throws {
        if listen.count != to.count {
            throw ValidationError("--listen and --to pair up in order: got \(listen.count) --listen and \(to.count) --to")
        }
        if config == nil && (listen.isEmpty || server == nil || keyFile == nil) {
            throw ValidationError("give --config FILE, or --listen, --to, --server and --key-file")
        }
    }

    func run() throws {
        let logger = runtime.makeLogger("mptcp-proxy.client")
        var configuration: ClientConfiguration
        if let config {
            configuration = try ClientConfiguration.load(path: config)
        } else {
            let key = try KeyFile.loadSingle(path: keyFile!)
            configuration = ClientConfiguration(forwards: [], upstream: UpstreamEndpoint(server: try parseAddress(server!, option: "--server"), key: key))
        }
        if let server { configuration.upstream.server = try parseAddress(server, option: "--server") }
        if let keyFile { configuration.upstream.key = try KeyFile.loadSingle(path: keyFile) }
        if !listen.isEmpty {
            configuration.forwards = try zip(listen, to).map { pair in
                Forward(listen: try parseAddress(pair.0, option: "--listen"), destination: try parseAddress(pair.1, option: "--to"))
            }
        }
        if noMptcp { configuration.upstream.mptcp = false }
        if noFastOpen { configuration.upstream.fastOpen = false }
        runtime.apply(timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.namespace = runtime.netns.map(NetworkNamespace.init)
        let service = ProxyClient.makeService(configuration, logger: logger)
        guard !noPathManager else { return try runtime.run(service, metrics: configuration.metrics) }
        var pmConfiguration = try paths.configuration()
        pmConfiguration.namespace = configuration.namespace
        let manager = PathManagerService(configuration: pmConfiguration, logger: Logger(label: "mptcp-proxy.pm"))
        var metricsServer: MetricsServer?
        try runtime.runUntilSignal(start: {
            try manager.start()
            do {
                try service.start()
                metricsServer = try runtime.startMetrics(service, configured: configuration.metrics)
            } catch { manager.stop(); throw error }
        }, stop: { drain in
            service.shutdown(drainTimeout: drain)
            metricsServer?.stop()
            manager.stop()
        }, logger: logger)
    }
}

struct ServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Endpoint side: terminate MPTCP, check each client's cookie, relay to the destination.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Configuration file (TOML subset; see docs/configuration.md). Options below override it.")
    var config: String?

    @Option(help: "Listen for MPTCP (and plain TCP) on ADDR:PORT (repeatable).")
    var listen: [String] = []

    @Option(help: "File of client keys: one `ID HEXKEY` per line.")
    var keys: String?

    @Flag(help: "Relay for clients that send no cookie. Dangerous: an open proxy.")
    var allowUnauthenticated = false

    func validate() throws {
        if config == nil && listen.isEmpty {
            throw ValidationError("give --config FILE, or --listen ADDR:PORT and --keys FILE")
        }
        if config == nil && keys == nil && !allowUnauthenticated {
            throw ValidationError("--keys FILE is required (or --allow-unauthenticated, explicitly)")
        }
    }

    func run() throws {
        let logger = runtime.makeLogger("mptcp-proxy.server")
        var configuration: ServerConfiguration
        if let config {
            configuration = try ServerConfiguration.load(path: config)
        } else {
            configuration = ServerConfiguration(listen: [], keys: [])
        }
        if !listen.isEmpty { configuration.listen = try listen.map { try parseAddress($0, option: "--listen") } }
        if let keys { configuration.keys = try KeyFile.load(path: keys) }
        if allowUnauthenticated { configuration.allowUnauthenticated = true }
        runtime.apply(timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.namespace = runtime.netns.map(NetworkNamespace.init)
        try runtime.run(ProxyServer.makeService(configuration, logger: logger), metrics: configuration.metrics)
    }
}
