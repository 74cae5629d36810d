/// What the monitor shows at one instant: kernel counters turned into rates and names.
/// Codable: `mptcp-stats --json` prints it as is.
public struct StatsSnapshot: Sendable, Codable, Equatable {
    /// Wall-clock time of the sample (Unix seconds).
    public var time: Double
    /// Seconds between this sample and the previous one (0 for the first).
    public var interval: Double
    public var connections: [ConnectionStats]
    public var interfaces: [InterfaceStats]
    public var endpoints: [EndpointStats]?
    public var limits: PathManagerLimits?
    public var listeners: Int
    public var events: [EventLine]
    /// Whether path-manager events can be received (they need CAP_NET_ADMIN).
    public var eventsAvailable: Bool
    /// What the monitor could not see, and why (for example missing CAP_NET_ADMIN).
    public var notes: [String]

    public init(time: Double, interval: Double, connections: [ConnectionStats], interfaces: [InterfaceStats],
                endpoints: [EndpointStats]? = nil, limits: PathManagerLimits? = nil, listeners: Int = 0,
                events: [EventLine] = [], eventsAvailable: Bool = true, notes: [String] = []) {
        self.time = time
        self.interval = interval
        self.connections = connections
        self.interfaces = interfaces
        self.endpoints = endpoints
        self.limits = limits
        self.listeners = listeners
        self.events = events
        self.eventsAvailable = eventsAvailable
        self.notes = notes
    }
}

public struct ConnectionStats: Sendable, Codable, Equatable {
    public var token: UInt32
    public var local: String
    public var remote: String
    public var state: String
    public var fallback: Bool
    public var subflowCount: Int
    /// Data-level rates (MPTCP bytes acked / received), bits per second; nil on first sight.
    public var txBitsPerSecond: Double?
    public var rxBitsPerSecond: Double?
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    /// Where a proxy relays this connection to, from its /metrics (`--proxy`).
    public var destination: String?
    public var subflows: [SubflowStats]

    public init(token: UInt32, local: String, remote: String, state: String, fallback: Bool, subflowCount: Int,
                txBitsPerSecond: Double?, rxBitsPerSecond: Double?, bytesSent: UInt64, bytesReceived: UInt64,
                destination: String? = nil, subflows: [SubflowStats]) {
        self.token = token
        self.local = local
        self.remote = remote
        self.state = state
        self.fallback = fallback
        self.subflowCount = subflowCount
        self.txBitsPerSecond = txBitsPerSecond
        self.rxBitsPerSecond = rxBitsPerSecond
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
        self.destination = destination
        self.subflows = subflows
    }
}

public struct SubflowStats: Sendable, Codable, Equatable {
    public var local: String
    public var remote: String
    public var interface: String
    public var interfaceClass: String
    /// Backup priority, asked for by us or by the peer.
    public var backup: Bool
    public var state: String
    public var txBitsPerSecond: Double?
    public var rxBitsPerSecond: Double?
    public var rttMilliseconds: Double
    public var congestionWindow: UInt32
    public var retransmits: UInt32
    public var lost: UInt32
    /// Retransmitted segments per segment sent since the previous sample, percent.
    public var lossPercent: Double?

    public init(local: String, remote: String, interface: String, interfaceClass: String, backup: Bool, state: String,
                txBitsPerSecond: Double?, rxBitsPerSecond: Double?, rttMilliseconds: Double, congestionWindow: UInt32,
                retransmits: UInt32, lost: UInt32, lossPercent: Double?) {
        self.local = local
        self.remote = remote
        self.interface = interface
        self.interfaceClass = interfaceClass
        self.backup = backup
        self.state = state
        self.txBitsPerSecond = txBitsPerSecond
        self.rxBitsPerSecond = rxBitsPerSecond
        self.rttMilliseconds = rttMilliseconds
        self.congestionWindow = congestionWindow
        self.retransmits = retransmits
        self.lost = lost
        self.lossPercent = lossPercent
    }
}

public struct InterfaceStats: Sendable, Codable, Equatable {
    public var name: String
    public var interfaceClass: String
    public var subflows: Int
    public var txBitsPerSecond: Double
    public var rxBitsPerSecond: Double
    /// tx + rx of the recent samples, oldest first (the sparkline).
    public var history: [Double]

    public init(name: String, interfaceClass: String, subflows: Int, txBitsPerSecond: Double, rxBitsPerSecond: Double, history: [Double]) {
        self.name = name
        self.interfaceClass = interfaceClass
        self.subflows = subflows
        self.txBitsPerSecond = txBitsPerSecond
        self.rxBitsPerSecond = rxBitsPerSecond
        self.history = history
    }
}

public struct EndpointStats: Sendable, Codable, Equatable {
    public var id: UInt8
    public var address: String
    public var flags: String
    public var interface: String?

    public init(id: UInt8, address: String, flags: String, interface: String?) {
        self.id = id
        self.address = address
        self.flags = flags
        self.interface = interface
    }
}

/// A path-manager event as the monitor lists it.
public struct EventLine: Sendable, Codable, Equatable {
    /// Wall-clock time (Unix seconds).
    public var time: Double
    public var text: String

    public init(time: Double, text: String) {
        self.time = time
        self.text = text
    }
}
