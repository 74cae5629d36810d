import ArgumentParser
import DataPlane
import Logging
import MPTCPKernel
import PathManager
import Proxy

/// Path-manager options shared by `client` and `pm`.
struct PathManagerOptions: ParsableArguments {
    @Option(name: .customLong("class"), help: "Interface class override IF=wifi|ethernet|cellular|other (repeatable).")
    var classes: [String] = []

    @Option(name: .customLong("endpoint-flags"), help: "Endpoint flags for one interface, IF=subflow[,backup][,fullmesh] (repeatable).")
    var endpointFlags: [String] = []

    @Option(help: "Next hop of an interface's routing table, IF=ADDR (repeatable); default: the next hop of that interface's default route in the main table (what its DHCP client installed), else on-link.")
    var gateway: [String] = []

    @Option(help: "Flags of cellular endpoints (default subflow,backup).")
    var cellularFlags: String = "subflow,backup"

    @Flag(help: "Also delete endpoints this manager did not create.")
    var ownAllEndpoints = false

    @Flag(help: "Leave routing tables and rules alone (only manage endpoints).")
    var noRouting = false

    @Flag(inversion: .prefixedNo, help: "Also watch the subflows' progress for paths that silently drop everything while their link stays up (black holes): take such a path out of use, steer new connections away from it, and try it again after a hold-down. Off by default for now (docs/decisions/0012): only link and address changes count.")
    var pathHealth = false

    @Option(help: "Milliseconds a failed path stays out of use before it is tried again (doubled each time it fails again soon after, up to 60 s).")
    var pathHoldDown: UInt64 = 2_000

    func validate() throws {
        if !(100...600_000).contains(pathHoldDown) { throw ValidationError("--path-hold-down must be 100...600000 ms") }
    }

    func configuration() throws -> PathManagerConfiguration {
        var configuration = PathManagerConfiguration()
        if pathHealth {
            var health = PathHealthConfiguration()
            health.holdDownMilliseconds = pathHoldDown
            health.maximumHoldDownMilliseconds = max(60_000, pathHoldDown)
            configuration.health = health
        }
        do { configuration.classifier = try InterfaceClassifier(parsingOverrides: classes) } catch {
            throw ValidationError("--class \(error)")
        }
        for item in endpointFlags {
            let (name, value) = try split(item, option: "--endpoint-flags")
            guard let flags = EndpointFlags(parsing: value) else {
                throw ValidationError("--endpoint-flags \(item): flags are signal, subflow, backup, fullmesh, laminar")
            }
            configuration.policy.interfaces[name, default: InterfacePolicy()].flags = flags
        }
        for item in gateway {
            let (name, value) = try split(item, option: "--gateway")
            guard let address = IPAddress(parsing: value) else { throw ValidationError("--gateway \(item): \"\(value)\" is not an IP address") }
            configuration.policy.interfaces[name, default: InterfacePolicy()].gateway = address
        }
        guard let cellular = EndpointFlags(parsing: cellularFlags) else {
            throw ValidationError("--cellular-flags \(cellularFlags): flags are signal, subflow, backup, fullmesh, laminar")
        }
        configuration.policy.classFlags[.cellular] = cellular
        configuration.policy.ownAllEndpoints = ownAllEndpoints
        configuration.policy.manageRouting = !noRouting
        return configuration
    }

    private func split(_ item: String, option: String) throws -> (String, String) {
        let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { throw ValidationError("\(option) \(item): expected IF=VALUE") }
        return (parts[0], parts[1])
    }
}

struct PathManagerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pm",
        abstract: "Manage MPTCP endpoints and per-uplink routing as interfaces come and go (standalone).")

    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var paths: PathManagerOptions

    func run() throws {
        let logger = runtime.makeLogger("mptcp-proxy.pm")
        var configuration = try paths.configuration()
        configuration.namespace = runtime.netns.map(NetworkNamespace.init)
        let manager = PathManagerService(configuration: configuration, logger: logger)
        logPathManagerHostProblems(namespace: configuration.namespace, logger: logger)
        try runtime.runUntilSignal(start: { try manager.start() }, stop: { _ in manager.stop() }, logger: logger)
    }
}

/// Logs, before the path manager starts, what about this host defeats multipath whatever the
/// manager does (HostCheck.pathManagerFindings), each with its fix: read in the manager's
/// namespace, since every one of these settings is per namespace.
func logPathManagerHostProblems(namespace: NetworkNamespace?, logger: Logger) {
    guard let facts = try? OSThread.run(in: namespace, { HostFacts.gather() }) else { return }
    for finding in HostCheck.pathManagerFindings(facts) {
        let text = "host: \(finding.check): \(finding.detail)\(finding.fix.map { "; fix: \($0)" } ?? "")"
        if finding.severity == .blocking { logger.error("\(text)") } else { logger.warning("\(text)") }
    }
}
