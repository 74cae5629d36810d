import DataPlane
import CLinuxShim
import CoreMetrics
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
    /// Failure detection from the subflows' progress (nil: off, only link and address events).
    /// Off by default: the handover tests' gaps are the same with it on or off, but under the
    /// soak's churn its sock_diag dumps (up to ten a second) make more connections be caught
    /// by a link loss with their request read and their answer lost (each then refused as a
    /// replay, decision 0019); see docs/decisions/0012.
    public var health: PathHealthConfiguration?
    /// How often the subflows are sampled while any exist on a managed path and one looks
    /// stalled or a SYN is unanswered (PathHealth.suspicious), or after `sampleSoon()`.
    public var sampleIntervalMilliseconds: Int32 = 100
    /// How often they are sampled while all make progress. A stall is still caught at the
    /// first steady sample: its clock runs from the last sample that saw progress.
    public var steadySampleIntervalMilliseconds: Int32 = 500
    /// A sample looks up the subflows the MPTCP events named (SubflowWatchList), one hash
    /// probe each; at most this often it dumps the kernel's TCP table instead, which also
    /// shows the joins still in SYN-SENT that no event names (the join timeout's evidence).
    /// Each dump walks the whole established hash table (about 4 ms of system time on this
    /// 24 GiB host) and under churn that load costs connections at a link loss (decision
    /// 0012). In an alert (`sampleSoon()`) and after a re-admission every sample is a dump.
    public var dumpIntervalMilliseconds: UInt64 = 2_000
    /// How much the host is doing: a count that moves whenever a connection is accepted or
    /// has bytes to move (the client passes its loops' `ProxyMetrics.connectionEvents`);
    /// nil (the standalone `pm`): unknown, so every sample is taken. While it stands still
    /// and the last sample showed nothing outstanding, a sample is skipped: nothing was
    /// written since, so nothing can stall, and an idle gateway with many connections costs
    /// nothing to watch (each sample of 300 subflows costs about 1.5 ms by lookup).
    public var activity: (@Sendable () -> UInt64)?
    /// Even on a quiet host, a sample at least this often: data the MPTCP socket held back
    /// (behind the peer's closed window) at the last sample can go out later by itself.
    public var quietSampleFloorMilliseconds: UInt64 = 10_000
    /// Where its counters go (the proxy's /metrics); nil: not counted.
    public var metricsFactory: MetricsFactory?
    /// Told the local addresses connections to the servers should start from whenever they
    /// change (PathPolicy.sources(avoiding:) the failed and unproven paths; empty: routing chooses). The client
    /// passes them to its server endpoints, whose dials and health checks bind to them.
    public var onUpstreamSources: (@Sendable ([IPAddress]) -> Void)?
    /// Told the local addresses that stopped being paths in use (link or address gone, or
    /// health took the path out), after any change of the upstream sources they cause. The
    /// client connects again those of its connections to the servers that started from one of
    /// them and have had no answer: it would come back over the path that failed, if at all.
    public var onPathsLost: (@Sendable (Set<IPAddress>) -> Void)?
    /// After `sampleSoon()`, sample at the fast rate for this long even with nothing to
    /// watch: the next connection attempts are then seen from their first SYN.
    public var alertSamplingMilliseconds: UInt64 = 5_000

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
    /// Written by `sampleSoon()`.
    private let alertEvent = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
    private let started = ResultsBox<Void>(count: 1)
    /// Every command carried out, with its outcome (for tests and metrics).
    public let journal = CommandJournal()
    /// How many times the rtnetlink monitor overran and the host was re-read.
    public let resyncs = Atomic<Int>(0)
    /// Health verdicts acted on, in order (for tests).
    public let verdicts = Mutex<[PathHealthVerdict]>([])
    /// Path health's samples so far: dumps of the TCP table, and rounds of lookups by key.
    public let sampleDumps = Atomic<Int>(0)
    public let sampleLookups = Atomic<Int>(0)
    /// Samples left out because the host was quiet (`activity`) with nothing outstanding.
    public let sampleSkips = Atomic<Int>(0)

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

    /// Something failed that a dead path could explain (a health check, a connection): look
    /// at the subflows now and keep looking closely for a while. With no subflows the manager
    /// does not sample at all (an idle gateway does not wake up), so on an idle gateway a black
    /// hole is only noticed this way, from the unanswered SYNs of the attempts that follow.
    public func sampleSoon() {
        var one: UInt64 = 1
        _ = write(alertEvent, &one, 8)
    }

    deinit {
        close(stopEvent)
        close(alertEvent)
    }

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
            let (links, addresses, mainRoutes) = try readHost(routes)
            let existing = try pm.endpoints()
            for link in links {
                logger.info("interface \(link.name) (ifindex \(link.index)): class \(classify(link.name)), \(link.isUsable ? "up" : "down")")
            }
            execute(policy.start(links: links, addresses: addresses, routes: mainRoutes, existing: existing, classify: classify), pm: pm, routes: routes)
            // Another manager's endpoint (mptcpd, NetworkManager, an `ip mptcp endpoint add`) is
            // never fought over, so its path gets none of this manager's care. Say so: a path
            // silently left out is what an operator would least expect.
            for endpoint in policy.foreign.values.sorted(by: { $0.id < $1.id }) {
                logger.warning("path manager: endpoint id \(endpoint.id) \(endpoint.address) was not made by this manager, so its path is left alone (no failover, routing table or path health); --own-all-endpoints replaces it, or `ip mptcp endpoint delete id \(endpoint.id)` before start")
            }
        } catch {
            started.set(0, .failure(error))
            return
        }
        let events = try? PathManagerEventSocket()
        if events == nil { logger.warning("not subscribed to MPTCP events (needs CAP_NET_ADMIN); link and address changes still handled") }
        started.set(0, .success(()))

        var fds = [pollfd(fd: monitor.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopEvent, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: alertEvent, events: Int16(POLLIN), revents: 0)]
        if let events { fds.append(pollfd(fd: events.fd, events: Int16(POLLIN), revents: 0)) }
        let eventsIndex = 3
        var health = configuration.health.map { PathHealth(configuration: $0) }
        let diag = health == nil ? nil : try? SockDiagClient()
        var watchList = SubflowWatchList()
        var lastDump: UInt64 = 0
        var lastTaken: UInt64 = 0
        var activityAtLastSample: UInt64?
        if let settings = configuration.health {
            logger.info("path health: on: a path whose subflows stall with data outstanding (at least \(settings.stallFloorMilliseconds) ms, else RTO + RTT) or whose new subflow goes unanswered for \(settings.joinTimeoutMilliseconds) ms is taken out for \(settings.holdDownMilliseconds) ms, doubling up to \(settings.maximumHoldDownMilliseconds) ms")
            if diag == nil { logger.warning("path health: sock_diag could not be opened, so no subflow is watched; link and address changes still handled") }
        } else {
            logger.info("path health: off: only link and address changes take a path out of use")
        }
        // Sampling runs while subflows exist on a managed path, and starts again on the next
        // MPTCP event; with none, the manager sleeps in poll with no timeout.
        var sampling = health != nil
        var nextSample = monotonicMilliseconds()
        var upstreamSources: [IPAddress] = []
        var alertUntil: UInt64 = 0
        var inUse = policy.activePathAddresses
        while !stopRequested.load(ordering: .acquiring) {
            // Once per turn, after the sources have followed whatever this turn changed.
            defer {
                let now = policy.activePathAddresses
                let lost = inUse.subtracting(now)
                inUse = now
                if !lost.isEmpty { configuration.onPathsLost?(lost) }
            }
            let now = monotonicMilliseconds()
            var deadline: UInt64? = health != nil && (sampling || now < alertUntil) ? nextSample : nil
            if let due = health?.nextDeadline { deadline = min(deadline ?? due, due) }
            let timeout = deadline.map { Int32(clamping: $0 > now ? $0 - now : 0) } ?? -1
            let ready = poll(&fds, nfds_t(fds.count), timeout)
            if ready < 0 { continue }
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
                    // Empty the queue first: until it is, the kernel drops what follows without
                    // saying so again, and the dump could miss a change that is never reported.
                    monitor.discardPending()
                    do {
                        let (links, addresses, all) = try readHost(routes)
                        logger.warning("rtnetlink monitor overran (the kernel dropped change messages): re-read \(links.count) links, \(addresses.count) addresses and \(all.count) routes")
                        execute(policy.resync(links: links, addresses: addresses, routes: all, classify: classify), pm: pm, routes: routes)
                    } catch {
                        logger.error("rtnetlink monitor overran and the re-read failed: \(error); state may be stale until the next change")
                    }
                } catch {
                    logger.error("rtnetlink monitor: \(error); state may be stale")
                }
                // A path whose link or address went and came back starts with a clean record.
                if let failed = health?.failedAddresses, !failed.isEmpty {
                    let paths = policy.pathAddresses
                    for address in failed where !paths.contains(address) { health?.forget(address) }
                }
            }
            if fds[2].revents != 0 {
                var count: UInt64 = 0
                _ = read(alertEvent, &count, 8)
                if health != nil {
                    alertUntil = monotonicMilliseconds() + configuration.alertSamplingMilliseconds
                    nextSample = min(nextSample, monotonicMilliseconds())
                }
            }
            if let events, fds.count > eventsIndex, fds[eventsIndex].revents != 0 {
                let pending: [MPTCPEvent]
                do {
                    pending = try events.pending()
                } catch {
                    // Overrun (ENOBUFS): the subflows those events named are known only to a dump.
                    logger.debug("mptcp events: \(error); the next sample dumps the subflows")
                    watchList.eventsLost()
                    pending = []
                }
                for event in pending {
                    logger.debug("mptcp event: \(event)")
                    watchList.apply(event)
                    if health != nil && !sampling {
                        // Something is happening: sample at the fast rate from now.
                        sampling = true
                        nextSample = min(nextSample, monotonicMilliseconds() + UInt64(configuration.sampleIntervalMilliseconds))
                    }
                }
            }
            if events == nil { watchList.eventsLost() }
            guard health != nil, let diag else { continue }
            let current = monotonicMilliseconds()
            if (sampling || current < alertUntil) && current >= nextSample {
                var state = SampleMethod.State(now: current)
                state.alertUntil = alertUntil
                state.lastDump = lastDump
                state.dumpInterval = configuration.dumpIntervalMilliseconds
                state.lastTaken = lastTaken
                state.quietFloor = configuration.quietSampleFloorMilliseconds
                state.listNeedsDump = watchList.needsDump
                state.outstanding = health!.outstanding
                state.activity = configuration.activity?()
                state.activityAtLastSample = activityAtLastSample
                let method = SampleMethod.choose(state)
                count("mptcp_proxy_path_health_samples_total", [("method", method.rawValue)])
                if method == .skip {
                    // Quiet since a sample that showed nothing outstanding: nothing to see.
                    sampleSkips.add(1, ordering: .relaxed)
                    nextSample = current + UInt64(configuration.steadySampleIntervalMilliseconds)
                } else {
                    activityAtLastSample = state.activity
                    lastTaken = current
                    let watched = policy.activePathAddresses
                    let subflows = sampleSubflows(diag, watched: watched, dump: method == .dump, watchList: &watchList)
                    if method == .dump { lastDump = current }
                    sampling = subflows.contains { watched.contains($0.localAddress) }
                    nextSample = current + UInt64(configuration.sampleIntervalMilliseconds)
                    for verdict in health!.observe(now: current, subflows: subflows, paths: watched) {
                        act(on: verdict, policy: &policy, pm: pm, routes: routes)
                    }
                    if !health!.suspicious && current >= alertUntil {
                        nextSample = current + UInt64(configuration.steadySampleIntervalMilliseconds)
                    }
                }
            }
            for verdict in health!.due(now: current) {
                act(on: verdict, policy: &policy, pm: pm, routes: routes)
                // Re-admitted: watch the joins the kernel now opens on it, which only dumps
                // show until they are answered, for as long as one may go unanswered.
                sampling = true
                nextSample = current + UInt64(configuration.sampleIntervalMilliseconds)
                alertUntil = max(alertUntil, current + health!.configuration.joinTimeoutMilliseconds + 2 * UInt64(configuration.sampleIntervalMilliseconds))
            }
            let sources = policy.sources(avoiding: health!.avoidedAddresses)
            if sources != upstreamSources {
                upstreamSources = sources
                logger.info("path manager: connections to the servers start from \(sources.isEmpty ? "wherever routing chooses (no path failed)" : sources.map { "\($0)" }.joined(separator: ", "))")
                configuration.onUpstreamSources?(sources)
            }
        }
        execute(policy.shutdown(), pm: pm, routes: routes)
    }

    /// Links, addresses and every route as the kernel has them now: at start-up, and again
    /// after an overrun.
    private func readHost(_ routes: RouteClient) throws(NetlinkError) -> ([LinkState], [InterfaceAddress], [RouteEntry]) {
        (try routes.links(), try routes.addresses(), try routes.routes())
    }

    /// The kernel's MPTCP subflows on the `watched` paths now, as the health monitor reads
    /// them: by a dump of the TCP table, which the watch list then follows, or by looking up
    /// the subflows the watch list names. Empty if sock_diag fails (the next sample tries
    /// again, and dumps).
    private func sampleSubflows(_ diag: SockDiagClient, watched: Set<IPAddress>, dump: Bool, watchList: inout SubflowWatchList) -> [SubflowSample] {
        let sockets: [DiagSocket]
        if dump {
            // Only the families in use: each dump walks the kernel's whole TCP hash table.
            guard let all = try? diag.sockets(.tcp, families: Set(watched.map(\.family))) else {
                watchList.eventsLost()
                return []
            }
            watchList.replace(with: all)
            sampleDumps.add(1, ordering: .relaxed)
            sockets = all
        } else {
            let keys = watchList.keys(on: watched)
            guard let found = try? diag.sockets(withKeys: keys) else {
                watchList.eventsLost()
                return []
            }
            watchList.refresh(asked: keys, found: found)
            sampleLookups.add(1, ordering: .relaxed)
            sockets = found
        }
        return sockets.compactMap { socket in
            guard socket.subflow != nil, let tcp = socket.tcp else { return nil }
            return SubflowSample(cookie: socket.cookie, localAddress: socket.local.address, state: socket.state, unacked: tcp.unacked,
                                 bytesAcked: tcp.bytesAcked, bytesReceived: tcp.bytesReceived, rttMicroseconds: tcp.rttMicroseconds,
                                 rtoMicroseconds: tcp.rtoMicroseconds)
        }
    }

    /// Carries out a health verdict: the policy takes the path out or puts it back; the
    /// decision is logged with its evidence and counted.
    private func act(on verdict: PathHealthVerdict, policy: inout PathPolicy, pm: PathManagerClient, routes: RouteClient) {
        verdicts.withLock { $0.append(verdict) }
        switch verdict {
        case .failed(let address, let kind, let evidence):
            let name = policy.interfaceName(of: address) ?? "?"
            logger.warning("path manager: path \(address) on \(name) failed (\(kind.rawValue)): \(evidence)")
            count("mptcp_proxy_path_failures_total", [("interface", name), ("kind", kind.rawValue)])
            execute(policy.pathFailed(address, evidence: evidence), pm: pm, routes: routes)
        case .readmit(let address, let holdDown):
            let name = policy.interfaceName(of: address) ?? "?"
            logger.info("path manager: path \(address) on \(name) tried again after \(holdDown) ms out of use")
            count("mptcp_proxy_path_readmissions_total", [("interface", name)])
            execute(policy.pathReadmitted(address, reason: "hold-down of \(holdDown) ms over"), pm: pm, routes: routes)
        }
    }

    private func count(_ label: String, _ dimensions: [(String, String)]) {
        guard let factory = configuration.metricsFactory else { return }
        Counter(label: label, dimensions: dimensions, factory: factory).increment()
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
                count("mptcp_proxy_path_commands_total", [("command", command.kind), ("outcome", "ok")])
            } catch {
                journal.record(command, error: error)
                count("mptcp_proxy_path_commands_total", [("command", command.kind), ("outcome", "failed")])
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
