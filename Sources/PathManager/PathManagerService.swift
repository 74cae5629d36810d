import DataPlane
import CLinuxShim
import Glibc
import Logging
import MPTCPKernel
import Synchronization

public struct PathManagerConfiguration: Sendable {
    public var policy = PathPolicyConfiguration()
    public var classifier = InterfaceClassifier()
    /// Run inside this network namespace (tests, or a gateway namespace).
    public var namespace: NetworkNamespace?
    /// SO_RCVBUF of the rtnetlink monitor socket; nil keeps the kernel's default. A burst of
    /// changes larger than this is an overrun, which the service survives by re-reading the
    /// host (the tests set it tiny to provoke one).
    public var monitorReceiveBufferBytes: Int32?

    public init() {}
}

/// Runs the path policy against the kernel: on its own thread, it dumps links, addresses and
/// endpoints, then reacts to rtnetlink changes within milliseconds, carrying out each
/// PathCommand over netlink and logging it with its reason. MPTCP events are logged.
/// `stop()` undoes what it installed.
public final class PathManagerService: @unchecked Sendable {
    private let configuration: PathManagerConfiguration
    private let logger: Logger
    private var thread: OSThread?
    private let stopRequested = Atomic<Bool>(false)
    /// Written by `stop()`: the thread sleeps in poll(2) on its sockets and this, with no
    /// timeout, so an idle path manager never wakes up.
    private let stopEvent = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
    private let started = ResultsBox<Void>(count: 1)
    /// Every command carried out, with its outcome (for tests and metrics).
    public let journal = CommandJournal()
    /// How many times the rtnetlink monitor overran and the host was re-read.
    public let resyncs = Atomic<Int>(0)

    public init(configuration: PathManagerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts the manager; returns once the initial state is installed (or throws why not).
    public func start() throws {
        if let namespace = configuration.namespace {
            // Fail here with the reason rather than leave the start-up waiting.
            try OSThread.run(in: namespace) {}
        }
        thread = OSThread(name: "path-manager", namespace: configuration.namespace) { [self] in run() }
        if case .failure(let error) = started.wait()[0] {
            thread?.join()
            thread = nil
            throw error
        }
    }

    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(stopEvent, &one, 8)
        thread?.join()
        thread = nil
    }

    deinit { close(stopEvent) }

    private func run() {
        let monitor: RouteClient
        let routes: RouteClient
        let pm: PathManagerClient
        var policy = PathPolicy(configuration: configuration.policy)
        let classifier = configuration.classifier
        let classify: (String) -> InterfaceClass = { classifier.classify($0) }
        do {
            // Subscribe before dumping, so no change between the dump and the monitor is lost.
            monitor = try RouteClient(monitor: true, receiveBufferBytes: configuration.monitorReceiveBufferBytes)
            routes = try RouteClient()
            pm = try PathManagerClient()
            let links = try routes.links()
            let addresses = try routes.addresses()
            let existing = try pm.endpoints()
            let mainRoutes = try routes.routes()
            for link in links {
                logger.info("interface \(link.name) (ifindex \(link.index)): class \(classify(link.name)), \(link.isUsable ? "up" : "down")")
            }
            execute(policy.start(links: links, addresses: addresses, routes: mainRoutes, existing: existing, classify: classify), pm: pm, routes: routes)
        } catch {
            started.set(0, .failure(error))
            return
        }
        let events = try? PathManagerEventSocket()
        if events == nil { logger.warning("not subscribed to MPTCP events (needs CAP_NET_ADMIN); link and address changes still handled") }
        started.set(0, .success(()))

        var fds = [pollfd(fd: monitor.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopEvent, events: Int16(POLLIN), revents: 0)]
        if let events { fds.append(pollfd(fd: events.fd, events: Int16(POLLIN), revents: 0)) }
        while !stopRequested.load(ordering: .acquiring) {
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready <= 0 { continue }
            if fds[0].revents != 0 {
                do {
                    for record in try monitor.pending() {
                        switch record {
                        case .link(let link): execute(policy.linkChanged(link, classify: classify), pm: pm, routes: routes)
                        case .address(let address): execute(policy.addressChanged(address), pm: pm, routes: routes)
                        case .route(let route): execute(policy.routeChanged(route), pm: pm, routes: routes)
                        case .malformed(let why): logger.warning("rtnetlink: ignored a malformed message: \(why)")
                        default: break
                        }
                    }
                } catch where error.errno == ENOBUFS {
                    // The kernel dropped change messages: whatever they said is lost, so read
                    // the whole host again and reconcile against it.
                    resyncs.add(1, ordering: .relaxed)
                    do {
                        let links = try routes.links()
                        let addresses = try routes.addresses()
                        let all = try routes.routes()
                        logger.warning("rtnetlink monitor overran (the kernel dropped change messages): re-read \(links.count) links, \(addresses.count) addresses and \(all.count) routes")
                        execute(policy.resync(links: links, addresses: addresses, routes: all, classify: classify), pm: pm, routes: routes)
                    } catch {
                        logger.error("rtnetlink monitor overran and the re-read failed: \(error); state may be stale until the next change")
                    }
                } catch {
                    logger.error("rtnetlink monitor: \(error); state may be stale")
                }
            }
            if let events, fds.count > 2, fds[2].revents != 0 {
                for event in (try? events.pending()) ?? [] {
                    logger.debug("mptcp event: \(event)")
                }
            }
        }
        execute(policy.shutdown(), pm: pm, routes: routes)
    }

    private func execute(_ decision: PathDecision, pm: PathManagerClient, routes: RouteClient) {
        for command in decision.commands {
            do {
                switch command {
                case .addEndpoint(let endpoint): try pm.add(endpoint)
                case .deleteEndpoint(let endpoint): try pm.delete(endpoint)
                case .setFlags(let endpoint): try pm.setFlags(endpoint)
                case .addRoute(let table, let gateway, let index, let source):
                    try routes.route(add: true, table: table, destination: nil, prefixLength: 0, gateway: gateway, interfaceIndex: index, source: source)
                case .deleteRoute(let table, let gateway, let index, let source):
                    try routes.route(add: false, table: table, destination: nil, prefixLength: 0, gateway: gateway, interfaceIndex: index, source: source)
                case .addRule(let table, let priority, let source): try routes.rule(add: true, table: table, priority: priority, source: source)
                case .deleteRule(let table, let priority, let source): try routes.rule(add: false, table: table, priority: priority, source: source)
                case .setLimits(let subflows, let accepted): try pm.setLimits(subflows: subflows, addAddrAccepted: accepted)
                }
                logger.info("path manager: \(command) (\(decision.reason))")
                journal.record(command, error: nil)
            } catch {
                journal.record(command, error: error)
                // The kernel removes a route with its link or its source address: already gone.
                if case .deleteRoute = command, error.errno == ESRCH {
                    logger.debug("path manager: \(command): already removed by the kernel")
                    continue
                }
                // Anything else (an endpoint left by an earlier run, ...): say so, carry on.
                logger.warning("path manager: \(command) failed: \(error) (\(decision.reason))")
            }
        }
    }
}

/// Commands carried out, with timestamps, readable from any thread.
public final class CommandJournal: Sendable {
    public struct Entry: Sendable {
        public var command: PathCommand
        public var milliseconds: UInt64
        public var error: NetlinkError?
    }
    private let entries = Mutex<[Entry]>([])
    func record(_ command: PathCommand, error: NetlinkError?) {
        entries.withLock { $0.append(Entry(command: command, milliseconds: monotonicMilliseconds(), error: error)) }
    }
    public var all: [Entry] { entries.withLock { $0 } }
}
