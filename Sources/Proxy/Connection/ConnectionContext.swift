import DataPlane
import Logging
import Synchronization

/// Timeouts of one proxied connection, in milliseconds.
public struct ConnectionTimeouts: Sendable, Equatable {
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

    /// The ranges the command line and the configuration file both enforce (a zero idle
    /// timeout would end every relay at once).
    public static let handshakeRange: ClosedRange<UInt64> = 100...600_000
    public static let connectRange: ClosedRange<UInt64> = 100...600_000
    public static let idleRange: ClosedRange<UInt64> = 1_000...86_400_000
}

/// Resolves host names off the event loops; `completion` runs on a resolver thread.
public protocol NameResolver: Sendable {
    func resolve(_ name: String, completion: @escaping @Sendable ([IPAddress], String?) -> Void)
}

/// What every connection of a service on one loop shares.
final class ConnectionContext {
    let loop: EventLoop
    let table: ConnectionTable
    let logger: Logger
    let timeouts: ConnectionTimeouts
    let metrics: ProxyMetrics
    let onEnd: (@Sendable (ConnectionRecord) -> Void)?
    let role: ConnectionRecord.Role
    /// Which socket is the MPTCP leg (read for the end record and /metrics).
    let mptcpLeg: Side
    /// Server: hold replies on a TCP-Fast-Open-accepted MPTCP socket until the client's key is in.
    let waitForMPTCPKeyBeforeSending: Bool
    /// The relay may copy (read(2) + send(2)) into the MPTCP leg, not only splice into it: on a
    /// server whose listeners refuse data in the SYN, where the Linux 6.18 fast-open fault
    /// that copying exposed cannot occur (docs/decisions/0007, 0009). A client cannot know its
    /// server's setting, so it always splices.
    let copyIntoMPTCP: Bool
    let resolver: NameResolver?
    /// Bounds the lines about connections that did not complete, per source.
    let rejectionLog: RejectionLogLimiter?

    init(loop: EventLoop, table: ConnectionTable, logger: Logger, timeouts: ConnectionTimeouts, metrics: ProxyMetrics,
         onEnd: (@Sendable (ConnectionRecord) -> Void)?, role: ConnectionRecord.Role, resolver: NameResolver? = nil,
         rejectionLog: RejectionLogLimiter? = nil, acceptsFastOpenData: Bool = false) {
        self.loop = loop
        self.table = table
        self.logger = logger
        self.timeouts = timeouts
        self.metrics = metrics
        self.onEnd = onEnd
        self.role = role
        self.mptcpLeg = role == .client ? .outbound : .inbound
        self.waitForMPTCPKeyBeforeSending = role == .server
        self.copyIntoMPTCP = role == .server && !acceptsFastOpenData
        self.resolver = resolver
        self.rejectionLog = rejectionLog
    }
}

/// A live connection, as the table of its loop knows it (so shutdown can end it).
protocol TrackedConnection: AnyObject {
    func finish(_ reason: CloseReason, reset: Bool)
    /// These local addresses stopped being paths in use: connect again, from `sources` (or
    /// wherever routing now says), if the connection to the server started from one of them
    /// and has had no answer (ConnectionDriver.pathsLost).
    func pathsLost(_ lost: Set<IPAddress>, sources: [IPAddress])
}

/// The live connections of one loop, so shutdown can find and end them.
final class ConnectionTable {
    private var connections: [ObjectIdentifier: TrackedConnection] = [:]
    let counter: ActiveCounter

    init(counter: ActiveCounter) {
        self.counter = counter
    }

    func add(_ connection: TrackedConnection) {
        connections[ObjectIdentifier(connection)] = connection
        counter.add(1)
    }

    func remove(_ connection: TrackedConnection) {
        if connections.removeValue(forKey: ObjectIdentifier(connection)) != nil {
            counter.add(-1)
        }
    }

    /// Ends every connection (a connection's context, and so this table, lives until then).
    func finishAll(_ reason: CloseReason) {
        for connection in Array(connections.values) { connection.finish(reason, reset: true) }
    }

    /// Tells every connection of the loop (a path failure is rare; a connection that is not
    /// dialling returns at once).
    func pathsLost(_ lost: Set<IPAddress>, sources: [IPAddress]) {
        for connection in Array(connections.values) { connection.pathsLost(lost, sources: sources) }
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
