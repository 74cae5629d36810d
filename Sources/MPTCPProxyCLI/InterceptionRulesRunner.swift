import ArgumentParser
import Foundation
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

    @discardableResult
    static func run(_ tool: String, _ arguments: [String], input: String? = nil) throws -> String {
        let process = Process()
        guard let path = ["/usr/sbin/\(tool)", "/sbin/\(tool)", "/usr/bin/\(tool)", "/bin/\(tool)"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CommandFailed(description: "\(tool) not found (install nftables / iproute2)")
        }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "\(tool) \(arguments.joined(separator: " ")): \(String(decoding: errors, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return String(decoding: output, as: UTF8.self)
    }
}
