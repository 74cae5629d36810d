import DataPlane
import Glibc
import Logging

/// What a service listens on and what it does with each accepted socket.
struct ListenerSpec {
    var address: SocketAddress
    var options: ListenerOptions
    /// Builds and starts the connection for an accepted socket, on the accepting loop.
    var accept: (ConnectionContext, Socket) -> Void
}

/// Loops, listeners and graceful shutdown, shared by the client and the server.
/// Each loop opens its own SO_REUSEPORT listener per address, so accepted connections stay
/// on the loop that accepted them and no cross-thread hand-off is needed.
public final class ProxyService: @unchecked Sendable {
    public let name: String
    public let logger: Logger
    public let active = ActiveCounter()
    public let metrics: ProxyMetrics
    private let specs: [ListenerSpec]
    private let loopCount: Int
    private let namespace: NetworkNamespace?
    private let timeouts: ConnectionTimeouts
    private let onEnd: (@Sendable (ConnectionRecord) -> Void)?
    private var group: LoopGroup?
    private var contexts: [ConnectionContext] = []
    private var listeners: [[Listener]] = []

    private let role: ConnectionRecord.Role

    init(name: String, role: ConnectionRecord.Role, specs: [ListenerSpec], loops: Int, namespace: NetworkNamespace?, timeouts: ConnectionTimeouts,
         logger: Logger, onEnd: (@Sendable (ConnectionRecord) -> Void)?) {
        self.name = name
        self.role = role
        self.specs = specs
        self.loopCount = loops
        self.namespace = namespace
        self.timeouts = timeouts
        self.logger = logger
        self.onEnd = onEnd
        self.metrics = ProxyMetrics(role: name, active: active)
    }

    /// Starts the loops and opens every listener; throws (having cleaned up) if any fails.
    public func start() throws {
        let group = try LoopGroup(count: loopCount, name: name, namespace: namespace)
        self.group = group
        let table = { [active] in ConnectionTable(counter: active) }
        contexts = group.loops.map { ConnectionContext(loop: $0, table: table(), logger: logger, timeouts: timeouts, metrics: metrics, onEnd: onEnd, role: role) }
        do {
            let contexts = self.contexts
            let specs = self.specs
            listeners = try group.onEachLoop { loop -> [Listener] in
                var opened: [Listener] = []
                do {
                    for spec in specs {
                        opened.append(try Listener(spec: spec, context: contexts[loop.index]))
                    }
                } catch {
                    opened.forEach { $0.close() }
                    throw error
                }
                return opened
            }
        } catch {
            _ = try? group.onEachLoop { loop in self.listenersClose(on: loop) }
            group.shutdown()
            self.group = nil
            throw error
        }
        for spec in specs {
            logger.info("\(name) listening on \(spec.address) (\(spec.options.mptcp ? "MPTCP" : "TCP"), \(loopCount) loop\(loopCount == 1 ? "" : "s"))")
        }
    }

    /// The addresses actually bound (a port 0 in the configuration becomes the kernel's choice;
    /// give such services one loop, since each loop binds its own listener).
    public var boundAddresses: [SocketAddress] {
        listeners.first?.compactMap { $0.socket.localAddress() } ?? []
    }

    private func listenersClose(on loop: EventLoop) {
        guard loop.index < listeners.count else { return }
        listeners[loop.index].forEach { $0.close() }
    }

    /// Graceful shutdown: stop accepting, let running connections finish for up to
    /// `drainTimeout` milliseconds, then end the rest and stop the loops.
    public func shutdown(drainTimeout: UInt64) {
        guard let group else { return }
        _ = try? group.onEachLoop { loop in self.listenersClose(on: loop) }
        let deadline = monotonicMilliseconds() + drainTimeout
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

    init(spec: ListenerSpec, context: ConnectionContext) throws {
        self.spec = spec
        self.context = context
        (socket, _) = try Socket.makeListener(at: spec.address, options: spec.options)
        do {
            try context.loop.register(socket.fd, events: EventLoop.readEvents, handler: self)
        } catch {
            socket.close()
            throw error
        }
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        while !closed {
            do {
                guard let accepted = try socket.accept() else { return }
                spec.accept(context, accepted)
            } catch {
                // EMFILE and friends: the connection waits in the backlog; say why.
                context.logger.warning("accept on \(spec.address): \(error)")
                return
            }
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        context.loop.deregister(socket.fd)
        socket.close()
    }
}
