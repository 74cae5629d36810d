import ArgumentParser
import ConvertProtocol
import DataPlane
import Glibc
import Proxy

extension HostCheck.Role: ExpressibleByArgument {}

/// `mptcp-proxy check`: reports what on this host would stop the proxy, with a fix for each;
/// exits 1 when something blocks operation.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check this host for what MPTCP and the proxy need (sysctls, limits, capabilities, other managers, the server endpoint).")

    @Option(help: "What this host runs: client (gateway) or server (VPS).")
    var role: HostCheck.Role = .client

    @Option(help: "Also try an Info exchange with this server endpoint ADDR:PORT (repeatable; needs --key-file).")
    var server: [String] = []

    @Option(help: "This client's key file (for the Info exchange).")
    var keyFile: String?

    @Flag(help: "The client will intercept the LAN (--transparent): check for nftables too.")
    var transparent = false

    @Option(help: "Run the checks inside this network namespace (ip netns).")
    var netns: String?

    func validate() throws {
        if !server.isEmpty && keyFile == nil { throw ValidationError("--server needs --key-file: the server answers only signed requests") }
    }

    func run() throws {
        if let netns { try NetworkNamespace(netns).enterOnCurrentThread() }
        var findings = HostCheck.diagnose(HostFacts.gather(), role: role, transparent: transparent)
        if let keyFile {
            let key = try KeyFile.loadSingle(path: keyFile)
            for text in server {
                findings.append(HostCheck.probe(try parseAddress(text, option: "--server"), key: key))
            }
        }
        for finding in findings { print(finding) }
        let worst = findings.map(\.severity).max() ?? .ok
        print(worst == .blocking ? "\nsomething blocks operation" : worst == .warning ? "\nworks, with warnings" : "\nall good")
        if worst == .blocking { throw ExitCode(1) }
    }
}

/// `mptcp-proxy keygen ID`: a new client key, written as the client's key file and as a line
/// for the server's keys file, both mode 600.
struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a client key: the client's key file, and the line to add to the server's keys file.")

    @Argument(help: "The client's key id (1-64 of A-Z a-z 0-9 . _ -), e.g. the gateway's name.")
    var id: String

    @Option(help: "Write the client's key file here (refuses to overwrite one).")
    var clientFile: String?

    @Option(help: "Append the line to this server keys file (created if missing).")
    var serverFile: String?

    func run() throws {
        // SystemRandomNumberGenerator is the kernel's getrandom(2) on Linux: fit for keys.
        var random = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let line = "\(id) \(secret.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined())\n"
        // The key file's own parser checks the id (and would refuse this line later otherwise).
        do { _ = try KeyFile.parse(line, file: "the new key") } catch { throw ValidationError("\(error)") }
        if clientFile == nil && serverFile == nil {
            print(line, terminator: "")
            return
        }
        if let clientFile { try write(line, to: clientFile, flags: O_WRONLY | O_CREAT | O_EXCL) }
        if let serverFile {
            if let existing = try? KeyFile.load(path: serverFile), existing.contains(where: { $0.id == id }) {
                throw ValidationError("\(serverFile) already has a key \(id): remove its line first to replace it")
            }
            try write(line, to: serverFile, flags: O_WRONLY | O_CREAT | O_APPEND)
        }
        print("key \(id): \(clientFile.map { "client key file \($0)" } ?? "")\(clientFile != nil && serverFile != nil ? ", " : "")\(serverFile.map { "line added to \($0) (reload the server: mptcp-proxy reload)" } ?? "")")
    }

    private func write(_ text: String, to path: String, flags: Int32) throws {
        let fd = open(path, flags | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ValidationError("\(path): \(String(cString: strerror(errno)))\(errno == EEXIST ? " (it exists; keygen never overwrites a key)" : "")") }
        defer { close(fd) }
        guard fchmod(fd, 0o600) == 0 else { throw ValidationError("\(path): chmod 600: \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else { throw ValidationError("\(path): \(String(cString: strerror(errno)))") }
    }
}
