import ConvertProtocol
import DataPlane

/// Reading client and server configuration files (format: ConfigFile; reference:
/// docs/configuration.md). Relative paths inside a file are relative to that file.
enum TimeoutKeys {
    static let all: Set<String> = ["handshake-timeout-ms", "connect-timeout-ms", "idle-timeout-ms", "loops", "metrics"]

    static func apply(_ reader: ConfigReader, timeouts: inout ConnectionTimeouts, loops: inout Int) throws(ConfigError) {
        if let value = try reader.integer("handshake-timeout-ms", in: 100...600_000) { timeouts.handshake = UInt64(value) }
        if let value = try reader.integer("connect-timeout-ms", in: 100...600_000) { timeouts.connect = UInt64(value) }
        if let value = try reader.integer("idle-timeout-ms", in: 1_000...86_400_000) { timeouts.idle = UInt64(value) }
        if let value = try reader.integer("loops", in: 1...256) { loops = value }
    }
}

func resolve(_ path: String, relativeTo file: String) -> String {
    if path.hasPrefix("/") { return path }
    guard let slash = file.lastIndex(of: "/") else { return path }
    return String(file[...slash]) + path
}

extension ClientConfiguration {
    /// Loads a client configuration:
    ///
    ///     server = "203.0.113.7:4443"
    ///     key-file = "client.key"
    ///     [[forward]]
    ///     listen = "0.0.0.0:8080"
    ///     to = "198.51.100.2:80"
    public static func load(path: String) throws(ConfigError) -> ClientConfiguration {
        let file = try ConfigFile.load(path: path)
        let root = ConfigReader(file: file, table: file.root)
        try root.rejectUnknownKeys(TimeoutKeys.all.union(["server", "key-file", "mptcp", "fast-open"]))
        if let unknown = file.tables.keys.first {
            throw ConfigError(file: path, line: file.tables[unknown]!.line, key: unknown, "unknown table; the client knows [[forward]]")
        }
        if let unknown = file.arrays.keys.first(where: { $0 != "forward" }) {
            throw ConfigError(file: path, line: file.arrays[unknown]![0].line, key: unknown, "unknown table; the client knows [[forward]]")
        }
        let server = try root.requiredAddress("server")
        let keyPath = resolve(try root.requiredString("key-file"), relativeTo: path)
        let key = try KeyFile.loadSingle(path: keyPath)
        var forwards: [Forward] = []
        for table in file.arrays["forward"] ?? [] {
            let reader = ConfigReader(file: file, table: table)
            try reader.rejectUnknownKeys(["listen", "to"])
            forwards.append(Forward(listen: try reader.requiredAddress("listen"), destination: try reader.requiredAddress("to")))
        }
        guard !forwards.isEmpty else {
            throw ConfigError(file: path, key: "forward", "no [[forward]] table: nothing to listen on")
        }
        var upstream = UpstreamEndpoint(server: server, key: key)
        upstream.mptcp = try root.boolean("mptcp") ?? true
        upstream.fastOpen = try root.boolean("fast-open") ?? true
        var configuration = ClientConfiguration(forwards: forwards, upstream: upstream)
        try TimeoutKeys.apply(root, timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.metrics = try root.address("metrics")
        return configuration
    }
}

extension ServerConfiguration {
    /// Loads a server configuration:
    ///
    ///     listen = "0.0.0.0:4443"
    ///     keys = "clients.keys"
    public static func load(path: String) throws(ConfigError) -> ServerConfiguration {
        let file = try ConfigFile.load(path: path)
        let root = ConfigReader(file: file, table: file.root)
        try root.rejectUnknownKeys(TimeoutKeys.all.union(["listen", "keys", "allow-unauthenticated", "max-clock-skew-s", "fast-open-queue"]))
        if let unknown = file.tables.keys.first ?? file.arrays.keys.first {
            throw ConfigError(file: path, key: unknown, "unknown table; the server configuration has none")
        }
        let listen = try root.requiredAddress("listen")
        let allowUnauthenticated = try root.boolean("allow-unauthenticated") ?? false
        var keys: [ClientKey] = []
        if let keysPath = try root.string("keys") {
            keys = try KeyFile.load(path: resolve(keysPath, relativeTo: path))
        } else if !allowUnauthenticated {
            throw ConfigError(file: path, key: "keys", "required key is missing (or set allow-unauthenticated = true explicitly)")
        }
        var configuration = ServerConfiguration(listen: [listen], keys: keys)
        configuration.allowUnauthenticated = allowUnauthenticated
        if let skew = try root.integer("max-clock-skew-s", in: 1...3600) { configuration.maximumClockSkew = UInt64(skew) }
        if let queue = try root.integer("fast-open-queue", in: 0...65535) { configuration.fastOpenQueue = Int32(queue) }
        try TimeoutKeys.apply(root, timeouts: &configuration.timeouts, loops: &configuration.loops)
        configuration.metrics = try root.address("metrics")
        return configuration
    }
}
