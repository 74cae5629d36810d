import DataPlane
import Glibc
import Logging
import Synchronization

/// What a service listens on and what it does with each accepted socket.
struct ListenerSpec {
    var address: SocketAddress
    var options: ListenerOptions
    /// What the listener takes, for the log ("forward", "SOCKS5", "HTTP CONNECT", "transparent").
    var kind: String
    /// Builds and starts the connection for an accepted socket and its peer (as accept4(2)
    /// reported it), on the accepting loop.
    var accept: (ConnectionContext, Socket, SocketAddress?) -> Void

    init(address: SocketAddress, options: ListenerOptions, kind: String = "", accept: @escaping (ConnectionContext, Socket, SocketAddress?) -> Void) {
        self.address = address
        self.options = options
        self.kind = kind
        self.accept = accept
    }
}

/// Work a service runs beside its connections, on a loop of its own (health checks): started
/// after the listeners, stopped before the loops end.
protocol ServiceCompanion: AnyObject, Sendable {
    func start(on loop: EventLoop)
    func stop()
    /// The client's path manager took these local addresses out of use (`ProxyService.pathsLost`).
    func pathsLost(_ lost: Set<IPAddress>)
}

extension ServiceCompanion {
    func pathsLost(_ lost: Set<IPAddress>) {}
}

/// Loops, listeners and graceful shutdown, shared by the client and the server.
/// Each loop opens its own SO_REUSEPORT listener per address, so accepted connections stay
/// on the loop that accepted them and no cross-thread hand-off is needed. Listeners can be
/// added and removed while running (a reload); connections already accepted are not touched.
public final class ProxyService: @unchecked Sendable {
    public let name: String
    public let logger: Logger
    public let active = ActiveCounter()
    public let metrics: ProxyMetrics
    /// A client's servers (health, choice, the address its dials start from); nil on a server.
    public internal(set) var serverEndpoints: ServerEndpoints?
    private var specs: [ListenerSpec]
    private let loopCount: Int
    private let namespace: NetworkNamespace?
    private let timeouts: ConnectionTimeouts
    private let onEnd: (@Sendable (ConnectionRecord) -> Void)?
    private let role: ConnectionRecord.Role
    private let resolver: NameResolver?
    private let rejectionLog: RejectionLogLimiter?
    private var group: LoopGroup?
    private let companions: [ServiceCompanion]
    private var housekeeping: LoopGroup?
    private var contexts: [ConnectionContext] = []
    /// The loops and their connection tables while running, for a path manager's thread.
    private let running = Mutex<[(loop: EventLoop, table: ConnectionTable)]>([])
    /// Per loop, its listeners by address; each set is touched only on its loop's thread.
    private final class LoopListeners {
        var byAddress: [SocketAddress: Listener] = [:]
    }
    private var listeners: [LoopListeners] = []

    init(name: String, role: ConnectionRecord.Role, specs: [ListenerSpec], loops: Int, namespace: NetworkNamespace?, timeouts: ConnectionTimeouts,
         logger: Logger, resolver: NameResolver? = nil, rejectionLogLinesPerMinute: Int = 20, metrics: ProxyMetrics? = nil,
         companions: [ServiceCompanion] = [], onEnd: (@Sendable (ConnectionRecord) -> Void)?) {
        self.name = name
        self.role = role
        self.specs = specs
        self.loopCount = loops
        self.namespace = namespace
        self.timeouts = timeouts
        self.logger = logger
        self.resolver = resolver
        self.rejectionLog = RejectionLogLimiter(perMinute: rejectionLogLinesPerMinute)
        self.onEnd = onEnd
        self.metrics = metrics ?? ProxyMetrics(role: name)
        self.companions = companions
    }

    /// Starts the loops and opens every listener; throws (having cleaned up) if any fails.
    public func start() throws {
        let group = try LoopGroup(count: loopCount, name: name, namespace: namespace)
        self.group = group
        metrics.observe(group.loops)
        let table = { [active] in ConnectionTable(counter: active) }
        // fast-open-queue is fixed for the process's life (a reload ignores a change to it).
        let acceptsFastOpenData = specs.contains { $0.options.mptcp && $0.options.fastOpenQueue > 0 }
        contexts = group.loops.map {
            ConnectionContext(loop: $0, table: table(), logger: logger, timeouts: timeouts, metrics: metrics, onEnd: onEnd, role: role,
                              resolver: resolver, rejectionLog: rejectionLog, acceptsFastOpenData: acceptsFastOpenData)
        }
        listeners = group.loops.map { _ in LoopListeners() }
        do {
            try open(specs)
        } catch {
            group.shutdown()
            self.group = nil
            throw error
        }
        running.withLock { [contexts] in $0 = contexts.map { ($0.loop, $0.table) } }
        for spec in specs { logListening(spec) }
        if !companions.isEmpty {
            do {
                let housekeeping = try LoopGroup(count: 1, name: "\(name)-housekeeping", namespace: namespace, pipeSize: 4096)
                self.housekeeping = housekeeping
                for companion in companions { companion.start(on: housekeeping.loops[0]) }
            } catch {
                shutdown(drainTimeout: 0)
                throw error
            }
        }
    }

    private func logListening(_ spec: ListenerSpec) {
        let kind = spec.kind.isEmpty ? "" : "\(spec.kind), "
        logger.info("\(name) listening on \(spec.address) (\(kind)\(spec.options.mptcp ? "MPTCP" : "TCP"), \(loopCount) loop\(loopCount == 1 ? "" : "s"))")
    }

    /// Opens `specs` on every loop; if any fails, closes what this call opened and throws.
    private func open(_ specs: [ListenerSpec]) throws {
        guard let group else { return }
        let contexts = self.contexts
        let results = try group.onEachLoop { loop -> [Result<Listener, Error>] in
            specs.map { spec in Result { try Listener(spec: spec, context: contexts[loop.index]) } }
        }
        let failure = results.joined().lazy.compactMap { result -> Error? in
            if case .failure(let error) = result { return error }
            return nil
        }.first
        let sets = listeners
        if let failure {
            _ = try? group.onEachLoop { loop in results[loop.index].forEach { if case .success(let l) = $0 { l.close() } } }
            throw failure
        }
        _ = try group.onEachLoop { loop in
            for case .success(let listener) in results[loop.index] { sets[loop.index].byAddress[listener.spec.address] = listener }
        }
    }

    /// Makes the service listen on exactly `specs` (a reload): new addresses are opened first,
    /// so a failure leaves everything as it was; then the ones no longer wanted are closed.
    /// An address kept keeps its listener (and its backlog).
    func setListeners(_ new: [ListenerSpec]) throws {
        let current = Set(specs.map(\.address))
        let wanted = Set(new.map(\.address))
        let added = new.filter { !current.contains($0.address) }
        try open(added)
        let removed = current.subtracting(wanted)
        if let group, !removed.isEmpty {
            let sets = listeners
            _ = try? group.onEachLoop { loop in
                for address in removed { sets[loop.index].byAddress.removeValue(forKey: address)?.close() }
            }
        }
        for spec in added { logListening(spec) }
        for address in removed { logger.info("\(name) stopped listening on \(address)") }
        specs = new
    }

    /// The addresses actually bound (a port 0 in the configuration becomes the kernel's choice;
    /// give such services one loop, since each loop binds its own listener).
    public var boundAddresses: [SocketAddress] {
        guard let first = listeners.first else { return [] }
        return specs.compactMap { first.byAddress[$0.address]?.socket.localAddress() }
    }

    /// The client's path manager took these local addresses out of use (link or address gone,
    /// or the path found dead). A connection to a server that started from one of them and has
    /// had no answer would wait for its handshake deadline: the answer comes back over the
    /// failed path, if at all. Each loop connects such connections again, from the upstream
    /// sources now in force or wherever routing now sends them. Returns at once.
    public func pathsLost(_ lost: Set<IPAddress>) {
        let sources = serverEndpoints?.upstreamSources.filter { !lost.contains($0) } ?? []
        for (loop, table) in running.withLock({ $0 }) {
            loop.execute { table.pathsLost(lost, sources: sources) }
        }
        // A server health check stranded the same way would count against a server that is fine.
        for companion in companions { companion.pathsLost(lost) }
    }

    /// Graceful shutdown: stop accepting, let running connections finish for up to
    /// `drainTimeout` milliseconds, then end the rest and stop the loops.
    public func shutdown(drainTimeout: UInt64) {
        guard let group else { return }
        running.withLock { $0 = [] }
        companions.forEach { $0.stop() }
        housekeeping?.shutdown()
        housekeeping = nil
        let sets = listeners
        _ = try? group.onEachLoop { loop in
            sets[loop.index].byAddress.values.forEach { $0.close() }
            sets[loop.index].byAddress.removeAll()
        }
        let deadline = monotonicMilliseconds() &+ drainTimeout
        if active.count > 0 {
            logger.info("\(name) draining \(active.count) connection(s) for up to \(drainTimeout) ms")
        }
        while active.count > 0 && monotonicMilliseconds() < deadline {
            usleep(20_000)
        }
        let contexts = self.contexts
        _ = try? group.onEachLoop { loop in contexts[loop.index].table.finishAll(.shutdown) }
        group.shutdown()
        self.group = nil
        logger.info("\(name) stopped")
    }
}

/// A listening socket on one loop.
final class Listener: EventHandler {
    let socket: Socket
    let spec: ListenerSpec
    let context: ConnectionContext
    private var closed = false
    private var backoff: UInt64 = 0
    private lazy var resume = LoopTimer { [weak self] in self?.resumeAccepting() }

    init(spec: ListenerSpec, context: ConnectionContext) throws {
        self.spec = spec
        self.context = context
        (socket, _) = try Socket.makeListener(at: spec.address, options: spec.options)
        do {
            try context.loop.register(socket.fd, events: EventLoop.levelReadEvents, handler: self)
        } catch {
            socket.close()
            throw error
        }
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        context.loop.census.noteConnectionEvent()
        acceptAll()
    }

    /// The pause for descriptors is over: listen again.
    private func resumeAccepting() {
        guard !closed else { return }
        do {
            try context.loop.register(socket.fd, events: EventLoop.levelReadEvents, handler: self)
        } catch {
            context.logger.warning("accept on \(spec.address): cannot resume (\(error)); retrying")
            context.loop.arm(resume, after: 1_000)
        }
    }

    /// Accepts one connection per event while connections come one at a time, and up to `batch`
    /// while they come in bursts. The listener is level-triggered, so what is left is reported
    /// again at the loop's next turn; an accept that finds the backlog empty is the costly case
    /// to avoid: Linux allocates the new socket and its file before it looks at the queue and
    /// frees both on EAGAIN (2.6 µs a call measured here, about ten empty reads). A burst shows
    /// itself as the listener being reported again in the very next turn of the loop.
    /// Out of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM): pause this listener for a backoff that
    /// doubles to a second, so the loop neither spins on a backlog it cannot serve nor gives up
    /// on it; one-off errors of a single connection (ECONNABORTED, EPROTO, ...) are skipped.
    private static let batch = 16
    /// The loop turn in which this listener was last reported.
    private var lastTurn: UInt64 = 0

    private func acceptAll() {
        let turn = context.loop.turn
        let limit = turn == lastTurn &+ 1 ? Self.batch : 1
        lastTurn = turn
        var taken = 0
        while !closed && taken < limit {
            taken += 1
            do {
                guard let (accepted, peer) = try socket.acceptWithPeer() else {
                    backoff = 0
                    return
                }
                backoff = 0
                // Replies and relayed bytes are small writes in a row (a Convert reply, then the
                // origin's first bytes): under Nagle the second waits for the first one's ACK, a
                // round trip (measured: 63 ms instead of 42 at 20 ms RTT through the chain).
                accepted.setNoDelay()
                spec.accept(context, accepted, peer)
            } catch {
                switch error.errno {
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    backoff = min(max(backoff * 2, 10), 1_000)
                    context.logger.warning("accept on \(spec.address): \(error); pausing this listener for \(backoff) ms")
                    // Level-triggered, the listener would be reported at once again: take it out
                    // of epoll until the pause ends.
                    context.loop.deregister(socket.fd)
                    context.loop.arm(resume, after: backoff)
                    return
                default:
                    context.logger.debug("accept on \(spec.address): \(error); going on")
                    continue
                }
            }
        }
    }

    func close() {
        guard !closed else { return }
        let paused = resume.isArmed
        closed = true
        resume.cancel()
        if !paused { context.loop.deregister(socket.fd) }
        socket.close()
    }
}
