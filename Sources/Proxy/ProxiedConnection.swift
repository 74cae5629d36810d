import CLinuxShim
import DataPlane
import Glibc
import Logging
import MPTCPKernel
import Synchronization

/// Timeouts of one proxied connection, in milliseconds.
public struct ConnectionTimeouts: Sendable {
    /// From accept until relaying starts (covers slowloris requests and slow replies).
    public var handshake: UInt64
    /// Connecting to the next hop.
    public var connect: UInt64
    /// No byte moved in either direction for this long ends the connection.
    public var idle: UInt64

    public init(handshake: UInt64 = 5_000, connect: UInt64 = 10_000, idle: UInt64 = 300_000) {
        self.handshake = handshake
        self.connect = connect
        self.idle = idle
    }
}

/// What every connection of a service shares: its loop's table, counters, logger, timeouts.
final class ConnectionContext {
    let loop: EventLoop
    let table: ConnectionTable
    let logger: Logger
    let timeouts: ConnectionTimeouts
    let onEnd: (@Sendable (ConnectionRecord) -> Void)?
    let metrics: ProxyMetrics

    init(loop: EventLoop, table: ConnectionTable, logger: Logger, timeouts: ConnectionTimeouts, metrics: ProxyMetrics,
         onEnd: (@Sendable (ConnectionRecord) -> Void)?) {
        self.loop = loop
        self.table = table
        self.logger = logger
        self.timeouts = timeouts
        self.metrics = metrics
        self.onEnd = onEnd
    }
}

/// The part of a client or server connection that is the same on both: the handshake's
/// small reads and writes, the splice relay afterwards, deadlines, and the single end record.
/// Subclasses drive their handshake state machine and call `startRelay` when it says so.
class ProxiedConnection: EventHandler {
    let context: ConnectionContext
    /// The accepted socket (LAN host for the client, MPTCP peer for the server).
    let inbound: Socket
    /// The socket towards the next hop, once dialled.
    var outbound: Socket?
    var record: ConnectionRecord
    private(set) var relay: SpliceRelay?
    private var pendingSend: [UInt8] = []
    private var pendingSendOffset = 0
    private let startedAt: UInt64
    private var lastActivity: UInt64 = 0
    private var relayScheduled = false
    private var sampledAtFirstEOF = false
    private(set) var isClosed = false
    private lazy var handshakeTimer = LoopTimer { [weak self] in self?.handshakeDeadlinePassed() }
    private lazy var idleTimer = LoopTimer { [weak self] in self?.idleCheck() }

    var loop: EventLoop { context.loop }
    var timeouts: ConnectionTimeouts { context.timeouts }

    init(context: ConnectionContext, inbound: Socket, role: ConnectionRecord.Role) {
        self.context = context
        self.inbound = inbound
        self.startedAt = context.loop.now
        self.record = ConnectionRecord(role: role, peer: inbound.peerAddress(), destination: "?")
    }

    /// Registers the inbound socket and arms the handshake deadline.
    func open() throws(SystemError) {
        try loop.register(inbound.fd, events: EventLoop.streamEvents, handler: self)
        context.table.add(self)
        loop.arm(handshakeTimer, after: timeouts.handshake)
    }

    /// Registers the accepted socket and starts the handshake; a connection that cannot be
    /// registered ends at once (logged).
    func launch() {
        do {
            try open()
            begin()
        } catch {
            context.logger.warning("accepted connection could not be registered: \(error)")
            finish(.ioError(error), reset: true)
        }
    }

    /// Starts the handshake (subclasses).
    func begin() {}

    // MARK: handshake helpers

    func handshakeDeadlinePassed() {}

    /// Queues bytes and writes as much as the socket takes. Returns true once all are out.
    func send(_ bytes: [UInt8], on socket: Socket, flags: Int32 = 0) throws(SystemError) -> Bool {
        pendingSend = bytes
        pendingSendOffset = 0
        return try flushSend(on: socket, flags: flags)
    }

    func flushSend(on socket: Socket, flags: Int32 = 0) throws(SystemError) -> Bool {
        while pendingSendOffset < pendingSend.count {
            let offset = pendingSendOffset
            let result = try pendingSend.withUnsafeBytes { all in
                Result { () throws(SystemError) -> IOResult in try socket.send(UnsafeRawBufferPointer(rebasing: all[offset...]), flags: flags) }
            }.get()
            guard case .processed(let n) = result else { return false }
            pendingSendOffset += n
        }
        pendingSend = []
        pendingSendOffset = 0
        return true
    }

    var hasPendingSend: Bool { pendingSendOffset < pendingSend.count }

    enum ReadOutcome {
        case bytes([UInt8])
        case endOfStream
        case wouldBlock
    }

    /// Reads at most `limit` bytes: exact framing keeps relay data in the socket.
    func read(upTo limit: Int, from socket: Socket) throws(SystemError) -> ReadOutcome {
        var buffer = [UInt8](repeating: 0, count: limit)
        let result = try buffer.withUnsafeMutableBytes { raw in
            Result { () throws(SystemError) -> IOResult in try socket.read(into: raw) }
        }.get()
        switch result {
        case .wouldBlock: return .wouldBlock
        case .processed(0): return .endOfStream
        case .processed(let n): return .bytes(Array(buffer[0..<n]))
        }
    }

    // MARK: relay

    func startRelay() {
        guard let outbound, relay == nil, !isClosed else { return }
        handshakeTimer.cancel()
        relay = SpliceRelay(client: inbound, server: outbound)
        lastActivity = loop.now
        loop.arm(idleTimer, after: timeouts.idle)
        if context.metrics.isExporting, let leg = mptcpLeg, let local = leg.localAddress(), let remote = leg.peerAddress() {
            context.metrics.relayStarted(ObjectIdentifier(self), ProxyMetrics.LiveConnection(
                peer: record.peer.map { "\($0)" } ?? "?", destination: record.destination, keyID: record.keyID,
                mptcpLocal: "\(local)", mptcpRemote: "\(remote)"))
        }
        pumpRelay()
    }

    func pumpRelay() {
        guard !isClosed, var current = relay else { return }
        do {
            let (progress, moved) = try current.pump(pipes: loop.pipes)
            relay = current
            if moved { lastActivity = loop.now }
            if !sampledAtFirstEOF && (current.upstream.finished || current.downstream.finished) {
                // Subflows close with the connection, so count them while it is still whole.
                sampledAtFirstEOF = true
                sampleTransport()
            }
            switch progress {
            case .finished:
                finish(.completed)
            case .yielded:
                // Let the loop serve other connections before going on; edge-triggered epoll
                // will not report this socket again, so schedule the continuation ourselves.
                if !relayScheduled {
                    relayScheduled = true
                    loop.execute { [self] in
                        relayScheduled = false
                        pumpRelay()
                    }
                }
            case .waiting:
                break
            }
        } catch {
            relay = current
            finish(.ioError(error), reset: true)
        }
    }

    private func idleCheck() {
        guard !isClosed else { return }
        let quietFor = loop.now - lastActivity
        if quietFor >= timeouts.idle {
            finish(.idleTimeout, reset: true)
        } else {
            loop.arm(idleTimer, at: lastActivity + timeouts.idle)
        }
    }

    // MARK: end

    /// The MPTCP leg of this connection (read for the end record before closing).
    var mptcpLeg: Socket? { nil }

    /// Keeps the most subflows the kernel has reported for the MPTCP leg.
    private func sampleTransport() {
        guard let leg = mptcpLeg else { return }
        let now = leg.transportKind()
        if case .mptcp(let seen) = record.transport, now.subflows <= seen { return }
        if record.transport == .fallback && now == .tcp { return }
        record.transport = now
    }

    /// Ends the connection once: logs its record, closes both sockets (with a reset when
    /// `reset`, so peers see a failure rather than a clean end), returns its pipes.
    func finish(_ reason: CloseReason, reset: Bool = false) {
        guard !isClosed else { return }
        isClosed = true
        handshakeTimer.cancel()
        idleTimer.cancel()
        record.reason = reason
        record.durationMilliseconds = loop.now - startedAt
        if let relay {
            record.bytesUp += relay.upstream.bytesDelivered
            record.bytesDown += relay.downstream.bytesDelivered
        }
        sampleTransport()
        relay?.release(pipes: loop.pipes)
        relay = nil
        for socket in [inbound, outbound].compactMap({ $0 }) {
            loop.deregister(socket.fd)
            if reset { socket.setLingerZero() }
            socket.close()
        }
        context.table.remove(self)
        let record = self.record
        context.logger.log(level: reason == .completed ? .info : .notice, "connection end: \(record)")
        context.metrics.ended(ObjectIdentifier(self), record)
        context.onEnd?(record)
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        if relay != nil { pumpRelay() }
    }
}

/// The live connections of one loop, so shutdown can find and end them.
final class ConnectionTable {
    private var connections: [ObjectIdentifier: ProxiedConnection] = [:]
    let counter: ActiveCounter

    init(counter: ActiveCounter) {
        self.counter = counter
    }

    func add(_ connection: ProxiedConnection) {
        connections[ObjectIdentifier(connection)] = connection
        counter.add(1)
    }

    func remove(_ connection: ProxiedConnection) {
        if connections.removeValue(forKey: ObjectIdentifier(connection)) != nil {
            counter.add(-1)
        }
    }

    /// Ends every connection (a connection's context, and so this table, lives until then).
    func finishAll(_ reason: CloseReason) {
        for connection in Array(connections.values) { connection.finish(reason, reset: true) }
    }

    var count: Int { connections.count }
}

/// Live connections of a whole service, readable from any thread (drain waits on it).
public final class ActiveCounter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    func add(_ delta: Int) { value.add(delta, ordering: .relaxed) }
    public var count: Int { value.load(ordering: .relaxed) }
}
