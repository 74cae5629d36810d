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
        version: "0.4.0",
        subcommands: [ClientCommand.self, ServerCommand.self, PathManagerCommand.self, ReloadCommand.self, CheckCommand.self, KeygenCommand.self])
}

/// Options every long-running subcommand shares. Every number is range-checked here exactly as
/// the configuration file checks it: a zero idle timeout is an error, not a relay that ends at once.
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Event loops (threads), 1...256; default: one per core.")
    var loops: Int?

    @Option(help: "On SIGTERM/SIGINT, let running connections finish for this many milliseconds (0...3600000).")
    var drainTimeoutMs: UInt64 = 10_000

    @Option(help: "Handshake deadline in milliseconds (request, connect and reply), 100...600000.")
    var handshakeTimeoutMs: UInt64?

    @Option(help: "Connect deadline towards the next hop in milliseconds, 100...600000.")
    var connectTimeoutMs: UInt64?

    @Option(help: "Idle deadline in milliseconds (no byte in either direction), 1000...86400000.")
    var idleTimeoutMs: UInt64?

    @Option(help: "Run inside this network namespace (ip netns).")
    var netns: String?

    @Option(help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (client and server; mptcp-stats --proxy reads it).")
    var metrics: String?

    @Option(help: "Write the process id here (for `mptcp-proxy reload` and service managers).")
    var pidFile: String?

    @Option(help: "SO_RCVBUF of the MPTCP leg in bytes, 0 for the kernel's autotuning (client default 4194304, server 0). Smaller bounds the data a dying path strands: see docs/decisions/0015.")
    var mptcpReceiveBuffer: Int?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
        if let loops, !(1...256).contains(loops) { throw ValidationError("--loops \(loops) is outside 1...256") }
        guard drainTimeoutMs <= 3_600_000 else { throw ValidationError("--drain-timeout-ms \(drainTimeoutMs) is outside 0...3600000") }
        try check(handshakeTimeoutMs, "--handshake-timeout-ms", ConnectionTimeouts.handshakeRange)
        try check(connectTimeoutMs, "--connect-timeout-ms", ConnectionTimeouts.connectRange)
        try check(idleTimeoutMs, "--idle-timeout-ms", ConnectionTimeouts.idleRange)
        if let metrics { _ = try parseAddress(metrics, option: "--metrics") }
        if let mptcpReceiveBuffer, !MPTCPReceiveBuffer.isValid(mptcpReceiveBuffer) {
            throw ValidationError("--mptcp-receive-buffer \(mptcpReceiveBuffer) is neither 0 nor within \(MPTCPReceiveBuffer.range.lowerBound)...\(MPTCPReceiveBuffer.range.upperBound)")
        }
    }

    private func check(_ value: UInt64?, _ option: String, _ range: ClosedRange<UInt64>) throws {
        guard let value, !range.contains(value) else { return }
        throw ValidationError("\(option) \(value) is outside \(range.lowerBound)...\(range.upperBound)")
    }

    /// Starts the metrics server of `service` at --metrics, else at the configuration's address.
    func startMetrics(_ service: ProxyService, configured: SocketAddress?) throws -> MetricsServer? {
        guard let address = try metrics.map({ try parseAddress($0, option: "--metrics") }) ?? configured else { return nil }
        let server = try MetricsServer(listen: address, namespace: netns.map(NetworkNamespace.init), metrics: service.metrics)
        server.start(logger: service.logger)
        return server
    }

    /// Logging that never blocks the thread that logs (NonBlockingLogHandler).
    func makeLogger(_ label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { name in NonBlockingLogHandler(label: name, level: level) }
        return Logger(label: label)
    }

    func apply(timeouts: inout ConnectionTimeouts, loops: inout Int) {
        if let value = handshakeTimeoutMs { timeouts.handshake = value }
        if let value = connectTimeoutMs { timeouts.connect = value }
        if let value = idleTimeoutMs { timeouts.idle = value }
        if let value = self.loops { loops = value }
    }

    /// Blocks SIGINT, SIGTERM and SIGHUP in every thread (threads started later inherit the
    /// mask), starts, then waits: SIGHUP calls `reload`, SIGINT or SIGTERM stops.
    func runUntilSignal(start: () throws -> Void, reload: () -> Void = {}, stop: (UInt64) -> Void, logger: Logger) throws {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)
        raiseOpenFileLimit()
        try start()
        handBackStartupPages(logger: logger)
        if let pidFile { writePidFile(pidFile, logger: logger) }
        defer { if let pidFile { unlink(pidFile) } }
        while true {
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received == SIGHUP {
                logger.info("received SIGHUP: reloading")
                reload()
                continue
            }
            logger.info("received \(received == SIGTERM ? "SIGTERM" : "SIGINT")")
            stop(drainTimeoutMs)
            LogSink.standardError.flush()
            return
        }
    }

    /// Start-up's code pages are not needed again by a running relay: dropping them takes the
    /// idle process from about 13 MB resident to its working set (docs/decisions/0020).
    private func handBackStartupPages(logger: Logger) {
        do {
            let release = try releaseStartupPages()
            logger.debug("handed back start-up's code pages: resident \(release.residentBefore / 1024) KB, now \(release.residentAfter / 1024) KB")
        } catch {
            logger.notice("start-up's code pages stay resident: \(error)")
        }
    }

    private func writePidFile(_ path: String, logger: Logger) {
        guard let file = fopen(path, "w") else {
            logger.warning("cannot write the pid file \(path): \(String(cString: strerror(errno)))")
            return
        }
        fputs("\(getpid())\n", file)
        fclose(file)
    }
}

func parseAddress(_ text: String, option: String) throws -> SocketAddress {
    do {
        return try SocketAddress(parsing: text)
    } catch {
        throw ValidationError("\(option): \(error)")
    }
}

/// Loads a key file and says loudly if others than its owner can read it.
func loadKeys(_ path: String, single: Bool, logger: Logger) throws -> [ClientKey] {
    if let warning = KeyFile.permissionWarning(path: path) { logger.warning("\(warning)") }
    return single ? [try KeyFile.loadSingle(path: path)] : try KeyFile.load(path: path)
}

/// `mptcp-proxy reload`: signals a running server (or client) to re-read its configuration.
struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Ask a running mptcp-proxy to re-read its configuration (SIGHUP to the pid in its pid file).")

    @Option(help: "The pid file the running process was started with (--pid-file).")
    var pidFile: String = "/run/mptcp-proxy/server.pid"

    func run() throws {
        guard let text = try? readTextFile(pidFile), let pid = Int32(text.split(whereSeparator: { $0 == "\n" || $0 == " " }).first ?? ""), pid > 1 else {
            throw ValidationError("\(pidFile) does not hold a process id (is the server running with --pid-file \(pidFile)?)")
        }
        guard kill(pid, SIGHUP) == 0 else {
            throw ValidationError("cannot signal process \(pid): \(String(cString: strerror(errno)))")
        }
        print("sent SIGHUP to \(pid); the process logs the outcome of the reload")
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

    @Option(help: "Serve SOCKS5 (RFC 1928 CONNECT) on ADDR:PORT (repeatable); host names are resolved by the server.")
    var socks5: [String] = []

    @Option(help: "Serve HTTP CONNECT on ADDR:PORT (repeatable).")
    var httpConnect: [String] = []

    @Option(help: "Take connections intercepted by nftables REDIRECT or TPROXY on ADDR:PORT (repeatable).")
    var transparent: [String] = []

    @Option(help: "File of `USERNAME PASSWORD` lines that SOCKS5 and HTTP CONNECT clients must give.")
    var proxyUsers: String?

    @Option(help: "Server endpoint ADDR:PORT (repeat: in order of preference; new connections go to the first healthy one).")
    var server: [String] = []

    @Option(help: "Milliseconds between health checks (Info exchanges) of each server, 100...3600000.")
    var serverCheckIntervalMs: UInt64?

    @Option(help: "File with this client's key: one line `ID HEXKEY`.")
    var keyFile: String?

    @Flag(help: "Dial the server with plain TCP instead of MPTCP.")
    var noMptcp = false

    @Flag(help: "Do not send the request in the SYN (TCP Fast Open).")
    var noFastOpen = false

    @Flag(help: "Do not run the built-in path manager (endpoints are managed elsewhere).")
    var noPathManager = false

    @OptionGroup var paths: PathManagerOptions

    @OptionGroup(title: "Interception") var interception: InterceptionOptions

    func validate() throws {
        if listen.count != to.count {
            throw ValidationError("--listen and --to pair up in order: got \(listen.count) --listen and \(to.count) --to")
        }
        if let interval = serverCheckIntervalMs, !(100...3_600_000).contains(interval) {
            throw ValidationError("--server-check-interval-ms \(interval) is outside 100...3600000")
        }
        let listeners = listen.count + socks5.count + httpConnect.count + transparent.count
        // Printing the interception rules needs the servers (they are bypassed), not the key.
        if config == nil && (listeners == 0 || server.isEmpty || (keyFile == nil && !interception.printRules)) {
            throw ValidationError("give --config FILE, or --server, --key-file and at least one of --listen/--to, --socks5, --http-connect, --transparent")
        }
    }

    func run() throws {
        let logger = runtime.makeLogger("mptcp-proxy.client")
        var configuration: ClientConfiguration
        if let config {
            configuration = try ClientConfiguration.load(path: config)
        } else {
            let key = try keyFile.map { try loadKeys($0, single: true, logger: logger)[0] } ?? ClientKey(id: "unused", secret: [])
            configuration = ClientConfiguration(forwards: [], upstream: UpstreamEndpoint(servers: [], key: key))
        }
        if !server.isEmpty { configuration.upstream.servers = try server.map { try parseAddress($0, option: "--server") } }
        guard Set(configuration.upstream.servers).count == configuration.upstream.servers.count else {
            throw ValidationError("a --server is given twice")
        }
        if let interval = serverCheckIntervalMs { configuration.serverHealth.interval = interval }
        if let keyFile { configuration.upstream.key = try loadKeys(keyFile, single: true, logger: logger)[0] }
        if !listen.isEmpty {
            configuration.forwards = try zip(listen, to).map { pair in
                Forward(listen: try parseAddress(pair.0, option: "--listen"), destination: try parseAddress(pair.1, option: "--to"))
            }
        }
        if !socks5.isEmpty { configuration.socks5 = try socks5.map { try parseAddress($0, option: "--socks5") } }
        if !httpConnect.isEmpty { configuration.httpConnect = try httpConnect.map { try parseAddress($0, option: "--http-connect") } }
        if !transparent.isEmpty { configuration.transparent = try transparent.map { try parseAddress($0, option: "--transparent") } }
        if let proxyUsers {
            if let warning = KeyFile.permissionWarning(path: proxyUsers) { logger.warning("proxy users: \(warning)") }
            configuration.proxyUsers = try ProxyUsers.load(path: proxyUsers)
        }
        if noMptcp { configuration.upstream.mptcp = false }
        if noFastOpen { configuration.upstream.fastOpen = false }
        if let buffer = runtime.mptcpReceiveBuffer { configuration.upstream.receiveBuffer = Int32(buffer) }
        runtime.apply(timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.namespace = runtime.netns.map(NetworkNamespace.init)
        if interception.printRules {
            print(InterceptionRulesRunner.printed(try interception.rules(for: configuration)))
            return
        }
        let rulesRunner = interception.installRules ? InterceptionRulesRunner(rules: try interception.rules(for: configuration), logger: logger) : nil
        let service = ProxyClient.makeService(configuration, logger: logger)
        var manager: PathManagerService?
        if !noPathManager {
            var pmConfiguration = try paths.configuration()
            pmConfiguration.namespace = configuration.namespace
            pmConfiguration.metricsFactory = service.metrics.metricsFactory
            // While a path is failed, connections to the servers start from a healthy one.
            pmConfiguration.onUpstreamSources = { [servers = service.serverEndpoints] in servers?.setUpstreamSources($0) }
            // A connection whose SYN left from a path that then failed starts again elsewhere.
            pmConfiguration.onPathsLost = { [service] in service.pathsLost($0) }
            // Path health leaves the subflows unsampled while no connection does anything.
            pmConfiguration.activity = { [metrics = service.metrics] in metrics.connectionEvents }
            let pathManager = PathManagerService(configuration: pmConfiguration, logger: Logger(label: "mptcp-proxy.pm"))
            // A failed health check or connection may be a dead path: the manager looks at once.
            service.serverEndpoints?.onFailure { [weak pathManager] in pathManager?.sampleSoon() }
            manager = pathManager
            logPathManagerHostProblems(namespace: pmConfiguration.namespace, logger: Logger(label: "mptcp-proxy.pm"))
        }
        var metricsServer: MetricsServer?
        try runtime.runUntilSignal(start: {
            try manager?.start()
            do {
                try service.start()
                metricsServer = try runtime.startMetrics(service, configured: configuration.metrics)
                // After the listener is up: intercepted connections must find it.
                try rulesRunner?.install()
            } catch { manager?.stop(); throw error }
        }, reload: {
            logger.warning("the client does not reload its configuration yet: restart it to apply changes")
        }, stop: { drain in
            logger.info("stop accepting, drain for up to \(drain) ms")
            // First, so new LAN connections go straight out instead of to a closing listener.
            rulesRunner?.remove()
            service.shutdown(drainTimeout: drain)
            metricsServer?.stop()
            manager?.stop()
        }, logger: logger)
    }
}

struct ServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Endpoint side: terminate MPTCP, check each client's cookie, relay to the destination.")

    @OptionGroup var runtime: RuntimeOptions

    @Option(help: "Configuration file (TOML subset; see docs/configuration.md). Options below override it. SIGHUP re-reads it.")
    var config: String?

    @Option(help: "Listen for MPTCP (and plain TCP) on ADDR:PORT (repeatable).")
    var listen: [String] = []

    @Option(help: "File of client keys: one `ID HEXKEY` per line. SIGHUP re-reads it.")
    var keys: String?

    @Flag(help: "Relay for clients that send no cookie. Dangerous: an open proxy.")
    var allowUnauthenticated = false

    @Option(help: "Allow destinations in this network (CIDR) although the built-in rules refuse it, e.g. a private origin (repeatable; before the file's rules).")
    var allow: [String] = []

    func validate() throws {
        for network in allow {
            do { _ = try IPNetwork(parsing: network) } catch { throw ValidationError("--allow \(error)") }
        }
        if config == nil && listen.isEmpty {
            throw ValidationError("give --config FILE, or --listen ADDR:PORT and --keys FILE")
        }
        if config == nil && keys == nil && !allowUnauthenticated {
            throw ValidationError("--keys FILE is required (or --allow-unauthenticated, explicitly)")
        }
        for address in listen { _ = try parseAddress(address, option: "--listen") }
    }

    /// The configuration from the file (if any) with the options applied over it.
    func load(logger: Logger) throws -> ServerConfiguration {
        var configuration: ServerConfiguration
        if let config {
            configuration = try ServerConfiguration.load(path: config)
        } else {
            configuration = ServerConfiguration(listen: [], keys: [])
        }
        if !listen.isEmpty {
            configuration.listeners = try listen.map { ServerConfiguration.Listener(address: try parseAddress($0, option: "--listen")) }
        }
        if let keys { configuration.keys = try loadKeys(keys, single: false, logger: logger) }
        if allowUnauthenticated { configuration.allowUnauthenticated = true }
        if let buffer = runtime.mptcpReceiveBuffer { configuration.mptcpReceiveBuffer = Int32(buffer) }
        if !allow.isEmpty {
            configuration.rules = try allow.map { AccessRule(action: .allow, networks: [try IPNetwork(parsing: $0)], name: "--allow \($0)") }
                + configuration.rules
        }
        runtime.apply(timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.namespace = runtime.netns.map(NetworkNamespace.init)
        return configuration
    }

    func run() throws {
        let logger = runtime.makeLogger("mptcp-proxy.server")
        let server = ProxyServer(configuration: try load(logger: logger), logger: logger)
        var metricsServer: MetricsServer?
        try runtime.runUntilSignal(start: {
            try server.start()
            metricsServer = try runtime.startMetrics(server.service, configured: server.configuration.metrics)
        }, reload: {
            server.reload { try load(logger: logger) }
        }, stop: { drain in
            logger.info("stop accepting, drain for up to \(drain) ms")
            server.shutdown(drainTimeout: drain)
            metricsServer?.stop()
        }, logger: logger)
    }
}
