import ConvertProtocol
import DataPlane

/// Reading client and server configuration files (format: ConfigFile; reference:
/// docs/configuration.md). Relative paths inside a file are relative to that file.
enum TimeoutKeys {
    static let all: Set<String> = ["handshake-timeout-ms", "connect-timeout-ms", "idle-timeout-ms", "loops", "metrics",
                                   "mptcp-receive-buffer"]

    /// `mptcp-receive-buffer` (bytes; 0 for the kernel's autotuning), both roles.
    static func receiveBuffer(_ reader: ConfigReader) throws(ConfigError) -> Int32? {
        guard let value = try reader.integer("mptcp-receive-buffer", in: 0...MPTCPReceiveBuffer.range.upperBound) else { return nil }
        guard MPTCPReceiveBuffer.isValid(value) else {
            throw reader.error("mptcp-receive-buffer", "must be 0 (the kernel's autotuning) or 65536...\(MPTCPReceiveBuffer.range.upperBound)")
        }
        return Int32(value)
    }

    static func apply(_ reader: ConfigReader, timeouts: inout ConnectionTimeouts, loops: inout Int) throws(ConfigError) {
        if let value = try reader.integer("handshake-timeout-ms", in: range(ConnectionTimeouts.handshakeRange)) { timeouts.handshake = UInt64(value) }
        if let value = try reader.integer("connect-timeout-ms", in: range(ConnectionTimeouts.connectRange)) { timeouts.connect = UInt64(value) }
        if let value = try reader.integer("idle-timeout-ms", in: range(ConnectionTimeouts.idleRange)) { timeouts.idle = UInt64(value) }
        if let value = try reader.integer("loops", in: 1...256) { loops = value }
    }

    private static func range(_ range: ClosedRange<UInt64>) -> ClosedRange<Int> { Int(range.lowerBound)...Int(range.upperBound) }
}

func resolve(_ path: String, relativeTo file: String) -> String {
    if path.hasPrefix("/") { return path }
    guard let slash = file.lastIndex(of: "/") else { return path }
    return String(file[...slash]) + path
}

extension ClientConfiguration {
    /// Loads a client configuration:
    ///
    ///     server = ["203.0.113.7:4443", "198.51.100.9:4443"]   # or one string
    ///     key-file = "client.key"
    ///     [[forward]]
    ///     listen = "0.0.0.0:8080"
    ///     to = "198.51.100.2:80"
    public static func load(path: String) throws(ConfigError) -> ClientConfiguration {
        let file = try ConfigFile.load(path: path)
        let root = ConfigReader(file: file, table: file.root)
        try root.rejectUnknownKeys(TimeoutKeys.all.union(["server", "key-file", "mptcp", "fast-open", "server-check-interval-ms",
                                                         "server-check-timeout-ms", "server-check-rise", "server-check-fall",
                                                         "server-attempt-timeout-ms", "socks5", "http-connect", "transparent",
                                                         "proxy-users"]))
        if let unknown = file.tables.keys.first {
            throw ConfigError(file: path, line: file.tables[unknown]!.line, key: unknown, "unknown table; the client knows [[forward]]")
        }
        if let unknown = file.arrays.keys.first(where: { $0 != "forward" }) {
            throw ConfigError(file: path, line: file.arrays[unknown]![0].line, key: unknown, "unknown table; the client knows [[forward]]")
        }
        guard let servers = try root.parsed("server", { try SocketAddress(parsing: $0) }), !servers.isEmpty else {
            throw ConfigError(file: path, key: "server", "required key is missing (an address, or a list in order of preference)")
        }
        guard Set(servers).count == servers.count else {
            throw ConfigError(file: path, key: "server", "a server is listed twice")
        }
        let keyPath = resolve(try root.requiredString("key-file"), relativeTo: path)
        let key = try KeyFile.loadSingle(path: keyPath)
        var forwards: [Forward] = []
        for table in file.arrays["forward"] ?? [] {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["listen", "to"])
            forwards.append(Forward(listen: try reader.requiredAddress("listen"), destination: try reader.requiredAddress("to")))
        }
        let socks5 = try root.parsed("socks5", { try SocketAddress(parsing: $0) }) ?? []
        let httpConnect = try root.parsed("http-connect", { try SocketAddress(parsing: $0) }) ?? []
        let transparent = try root.parsed("transparent", { try SocketAddress(parsing: $0) }) ?? []
        guard !(forwards.isEmpty && socks5.isEmpty && httpConnect.isEmpty && transparent.isEmpty) else {
            throw ConfigError(file: path, key: "forward", "no [[forward]], socks5, http-connect or transparent: nothing to listen on")
        }
        var upstream = UpstreamEndpoint(servers: servers, key: key)
        upstream.mptcp = try root.boolean("mptcp") ?? true
        upstream.fastOpen = try root.boolean("fast-open") ?? true
        if let buffer = try TimeoutKeys.receiveBuffer(root) { upstream.receiveBuffer = buffer }
        var configuration = ClientConfiguration(forwards: forwards, upstream: upstream)
        configuration.socks5 = socks5
        configuration.httpConnect = httpConnect
        configuration.transparent = transparent
        if let users = try root.string("proxy-users") {
            configuration.proxyUsers = try ProxyUsers.load(path: resolve(users, relativeTo: path))
        }
        var health = ServerHealthSettings()
        if let value = try root.integer("server-check-interval-ms", in: 100...3_600_000) { health.interval = UInt64(value) }
        if let value = try root.integer("server-check-timeout-ms", in: 100...60_000) { health.timeout = UInt64(value) }
        if let value = try root.integer("server-check-rise", in: 1...100) { health.rise = value }
        if let value = try root.integer("server-check-fall", in: 1...100) { health.fall = value }
        if let value = try root.integer("server-attempt-timeout-ms", in: 100...60_000) { health.attemptTimeout = UInt64(value) }
        configuration.serverHealth = health
        try TimeoutKeys.apply(root, timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.metrics = try root.address("metrics")
        return configuration
    }
}

extension ServerConfiguration {
    static let rootKeys: Set<String> = TimeoutKeys.all.union([
        "listen", "keys", "allow-unauthenticated", "max-clock-skew-s", "max-future-skew-s", "replay-cache-entries",
        "fast-open-queue", "max-connections", "max-connections-per-key", "max-handshakes-per-source",
        "new-connections-per-source-per-s", "tracked-sources", "default-action", "rejection-log-lines-per-minute",
    ])

    /// Loads a server configuration (reference: docs/configuration.md):
    ///
    ///     listen = "0.0.0.0:4443"
    ///     keys = "clients.keys"
    ///     [[rule]]
    ///     action = "allow"
    ///     to = ["10.0.5.0/24"]
    ///     ports = [5432]
    ///     keys = ["gw-1"]
    public static func load(path: String) throws(ConfigError) -> ServerConfiguration {
        let file = try ConfigFile.load(path: path)
        let root = ConfigReader(file: file, table: file.root)
        try root.rejectUnknownKeys(rootKeys)
        if let unknown = file.tables.keys.first {
            throw ConfigError(file: path, line: file.tables[unknown]!.line, key: unknown, "unknown table; the server knows [[rule]], [[pool]], [[listener]] and [[key-pool]]")
        }
        if let unknown = file.arrays.keys.first(where: { !["rule", "pool", "listener", "key-pool"].contains($0) }) {
            throw ConfigError(file: path, line: file.arrays[unknown]![0].line, key: unknown, "unknown table; the server knows [[rule]], [[pool]], [[listener]] and [[key-pool]]")
        }
        let listen = try root.parsed("listen") { try SocketAddress(parsing: $0) } ?? []
        let allowUnauthenticated = try root.boolean("allow-unauthenticated") ?? false
        var keys: [ClientKey] = []
        if let keysPath = try root.string("keys") {
            keys = try KeyFile.load(path: resolve(keysPath, relativeTo: path))
        } else if !allowUnauthenticated {
            throw ConfigError(file: path, key: "keys", "required key is missing (or set allow-unauthenticated = true explicitly)")
        }
        var configuration = ServerConfiguration(listen: listen, keys: keys)
        configuration.allowUnauthenticated = allowUnauthenticated
        if let skew = try root.integer("max-clock-skew-s", in: 1...3600) { configuration.maximumClockSkew = UInt64(skew) }
        if let skew = try root.integer("max-future-skew-s", in: 0...300) { configuration.maximumFutureSkew = UInt64(skew) }
        if let entries = try root.integer("replay-cache-entries", in: 1024...(1 << 24)) { configuration.replayCacheEntries = entries }
        if let queue = try root.integer("fast-open-queue", in: 0...65535) { configuration.fastOpenQueue = Int32(queue) }
        if let buffer = try TimeoutKeys.receiveBuffer(root) { configuration.mptcpReceiveBuffer = buffer }
        if let value = try root.integer("max-connections", in: 1...1_000_000) { configuration.limits.maxConnections = value }
        if let value = try root.integer("max-connections-per-key", in: 1...1_000_000) { configuration.limits.maxConnectionsPerKey = value }
        if let value = try root.integer("max-handshakes-per-source", in: 1...65535) { configuration.limits.maxHandshakesPerSource = value }
        if let value = try root.integer("new-connections-per-source-per-s", in: 1...1_000_000) { configuration.limits.newConnectionsPerSourcePerSecond = value }
        if let value = try root.integer("tracked-sources", in: 16...(1 << 20)) { configuration.limits.trackedSources = value }
        if let value = try root.integer("rejection-log-lines-per-minute", in: 0...100_000) { configuration.rejectionLogLinesPerMinute = value }
        if let action = try root.string("default-action") {
            guard let parsed = AccessRule.Action(rawValue: action) else { throw root.error("default-action", "must be \"allow\" or \"deny\"") }
            configuration.defaultAction = parsed
        }
        try TimeoutKeys.apply(root, timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.metrics = try root.address("metrics")
        let keyIDs = Set(keys.map(\.id))

        for (index, table) in (file.arrays["rule"] ?? []).enumerated() {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["action", "to", "ports", "keys", "proxy-protocol", "name"])
            guard let action = AccessRule.Action(rawValue: try reader.requiredString("action")) else {
                throw reader.error("action", "must be \"allow\" or \"deny\"")
            }
            let ruleKeys = try reader.strings("keys") ?? []
            if let unknown = ruleKeys.first(where: { !keyIDs.contains($0) }), !allowUnauthenticated {
                throw reader.error("keys", "\"\(unknown)\" is not a key id of the key file")
            }
            configuration.rules.append(AccessRule(
                action: action,
                networks: try reader.parsed("to") { try IPNetwork(parsing: $0) } ?? [],
                ports: try reader.items("ports") { try PortRange(parsing: $0) } ?? [],
                keys: Set(ruleKeys),
                proxyProtocol: try reader.boolean("proxy-protocol") ?? false,
                name: try reader.string("name") ?? "rule \(index + 1) (\(path.lastComponent):\(table.line))"))
        }

        var poolNames: [String: Int] = [:]
        for table in file.arrays["pool"] ?? [] {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["name", "members", "balance", "check-interval-ms", "check-timeout-ms", "rise", "fall", "check-send", "check-expect"])
            let name = try reader.requiredString("name")
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw reader.error("name", "a pool name is letters, digits, . _ -")
            }
            if let first = poolNames[name] { throw reader.error("name", "pool \"\(name)\" is defined twice (first on line \(first))") }
            poolNames[name] = table.line
            guard let members = try reader.parsed("members", { try SocketAddress(parsing: $0) }), !members.isEmpty else {
                throw reader.error("members", "a pool needs at least one member ADDR:PORT")
            }
            var balance = UpstreamPool.Balance.roundRobin
            if let text = try reader.string("balance") {
                guard let parsed = UpstreamPool.Balance(rawValue: text) else {
                    throw reader.error("balance", "must be one of \(UpstreamPool.Balance.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                balance = parsed
            }
            var health = HealthCheckSettings()
            if let value = try reader.integer("check-interval-ms", in: 100...3_600_000) { health.interval = UInt64(value) }
            if let value = try reader.integer("check-timeout-ms", in: 50...60_000) { health.timeout = UInt64(value) }
            if let value = try reader.integer("rise", in: 1...100) { health.rise = value }
            if let value = try reader.integer("fall", in: 1...100) { health.fall = value }
            health.send = Array((try reader.string("check-send") ?? "").utf8)
            health.expect = Array((try reader.string("check-expect") ?? "").utf8)
            configuration.pools.append(Pool(name: name, members: members, balance: balance, health: health))
        }

        for table in file.arrays["listener"] ?? [] {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["listen", "pool"])
            let pool = try reader.string("pool")
            if let pool, poolNames[pool] == nil { throw reader.error("pool", "no [[pool]] is named \"\(pool)\"") }
            configuration.listeners.append(Listener(address: try reader.requiredAddress("listen"), pool: pool))
        }
        guard !configuration.listeners.isEmpty else {
            throw ConfigError(file: path, key: "listen", "required key is missing (or give a [[listener]])")
        }
        for table in file.arrays["key-pool"] ?? [] {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["key", "pool"])
            let key = try reader.requiredString("key")
            let pool = try reader.requiredString("pool")
            guard keyIDs.contains(key) else { throw reader.error("key", "\"\(key)\" is not a key id of the key file") }
            guard poolNames[pool] != nil else { throw reader.error("pool", "no [[pool]] is named \"\(pool)\"") }
            configuration.keyPools[key] = pool
        }
        return configuration
    }
}

/// The last path component, for rule names in logs.
extension String {
    fileprivate var lastComponent: String { split(separator: "/").last.map(String.init) ?? self }
}
