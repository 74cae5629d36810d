import ArgumentParser
import Glibc
import Logging
import DataPlane
import Proxy

extension InterceptionRules.Mode: ExpressibleByArgument {}

/// Interception options of `mptcp-proxy client` (nftables and policy routing for --transparent).
struct InterceptionOptions: ParsableArguments {
    @Flag(help: "Install the nftables table (and TPROXY routing) that sends the LAN's TCP to the first --transparent listener; removed on exit, and replaced on the next start after a crash.")
    var installRules = false

    @Flag(help: "Print the rules --install-rules would install, and exit.")
    var printRules = false

    @Option(help: "How connections are intercepted: redirect (nat, conntrack) or tproxy.")
    var intercept: InterceptionRules.Mode = .redirect

    @Option(help: "LAN interface whose TCP is intercepted (repeatable).")
    var lanInterface: [String] = []

    @Option(help: "Destination network never intercepted, besides the built-in private ranges and the servers (repeatable).")
    var bypass: [String] = []

    @Flag(help: "Intercept private, loopback, link-local and multicast destinations too (bypassed by default).")
    var noDefaultBypass = false

    @Flag(help: "Reject the LAN's UDP 443 (QUIC), so browsers fall back to TCP, which is bonded.")
    var blockQuic = false

    func rules(for configuration: ClientConfiguration) throws -> InterceptionRules {
        guard let listener = configuration.transparent.first else {
            throw ValidationError("--install-rules and --print-rules need a --transparent listener")
        }
        let extra = try bypass.map { text in
            do { return try IPNetwork(parsing: text) } catch { throw ValidationError("--bypass \(text): \(error)") }
        }
        do {
            return try InterceptionRules(mode: intercept, port: listener.port, lanInterfaces: lanInterface,
                                         bypass: (noDefaultBypass ? [] : InterceptionRules.defaultBypass) + extra,
                                         servers: configuration.upstream.servers,
                                         blockQUIC: blockQuic)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// Puts interception rules into the kernel and takes them out, with the system's own tools
/// (`nft -f -` runs the whole table as one transaction; `ip` for the TPROXY routing).
struct InterceptionRulesRunner {
    let rules: InterceptionRules
    let logger: Logger

    /// The nft script, loadable as is (`nft -f`), with the routing commands as comments.
    static func printed(_ rules: InterceptionRules) -> String {
        let routing = rules.routingInstall.map { "#   ip " + $0.joined(separator: " ") }
        return rules.installScript + (routing.isEmpty ? "" : "# TPROXY routing, also installed:\n" + routing.joined(separator: "\n") + "\n")
    }

    func install() throws {
        for command in InterceptionRules.routingRemoval { _ = try? Self.run("ip", command) }
        try Self.run("nft", ["-f", "-"], input: rules.installScript)
        do {
            for command in rules.routingInstall { try Self.run("ip", command) }
        } catch {
            remove()
            throw error
        }
        logger.notice("interception rules installed: nftables table inet \(InterceptionRules.table) (\(rules.mode.rawValue) to port \(rules.port) from \(rules.lanInterfaces.joined(separator: ", "))\(rules.blockQUIC ? ", QUIC blocked" : ""))")
    }

    func remove() {
        do {
            try Self.run("nft", ["-f", "-"], input: InterceptionRules.removalScript)
        } catch {
            logger.error("removing nftables table inet \(InterceptionRules.table): \(error)")
        }
        for command in InterceptionRules.routingRemoval { _ = try? Self.run("ip", command) }
        logger.notice("interception rules removed")
    }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a system tool with `input` on its standard input; throws with its error output if it
    /// fails. posix_spawn, not Foundation's Process: the static binary leaves Foundation out.
    static func run(_ tool: String, _ arguments: [String], input: String? = nil) throws {
        guard let path = systemTool(tool) else {
            throw CommandFailed(description: "\(tool) not found (install nftables / iproute2)")
        }
        var stdinPipe: [Int32] = [0, 0], stderrPipe: [Int32] = [0, 0]
        guard pipe(&stdinPipe) == 0, pipe(&stderrPipe) == 0 else {
            throw CommandFailed(description: "pipe: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
        for fd in stdinPipe + stderrPipe { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
        close(stdinPipe[0])
        close(stderrPipe[1])
        guard spawned == 0 else {
            close(stdinPipe[1])
            close(stderrPipe[0])
            throw CommandFailed(description: "\(tool): \(String(cString: strerror(spawned)))")
        }
        if let input {
            var bytes = Array(input.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { write(stdinPipe[1], $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                bytes = bytes.dropFirst(n)
            }
        }
        close(stdinPipe[1])
        var errors: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(stderrPipe[0], &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            errors += buffer[0..<n]
        }
        close(stderrPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Exited normally with 0 (WIFEXITED && WEXITSTATUS == 0).
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let text = String(decoding: errors, as: UTF8.self).split(separator: "\n").joined(separator: "; ")
            throw CommandFailed(description: "\(tool) \(arguments.joined(separator: " ")): \(text.isEmpty ? "status \(status)" : text)")
        }
    }
}
