import DataPlane
import Synchronization

/// How often and how a pool member is checked, and how many results in a row change its state.
public struct HealthCheckSettings: Sendable, Equatable {
    public var interval: UInt64 = 2_000
    public var timeout: UInt64 = 1_000
    /// Successes in a row that bring a down member back.
    public var rise = 2
    /// Failures in a row that take an up member out.
    public var fall = 3
    /// Sent once connected (empty: the connect alone is the check).
    public var send: [UInt8] = []
    /// Must appear in what comes back (empty: anything, even nothing, passes).
    public var expect: [UInt8] = []

    public init() {}
}

/// The health of one member as the checks see it: up until `fall` failures in a row, down until
/// `rise` successes in a row, so one lost probe does not flap it and a recovering member proves
/// itself before it gets traffic again. Pure.
public struct HealthState: Sendable, Equatable {
    public private(set) var isUp: Bool
    private var streak = 0

    public init(isUp: Bool = true) { self.isUp = isUp }

    /// Records one check; returns true when the state changed.
    public mutating func record(success: Bool, rise: Int, fall: Int) -> Bool {
        if success == isUp {
            streak = 0
            return false
        }
        streak += 1
        guard streak >= (isUp ? fall : rise) else { return false }
        isUp.toggle()
        streak = 0
        return true
    }
}

/// A named group of upstream servers that a listener or a key is bound to instead of the
/// destination the client carries (reverse-proxy mode).
public final class UpstreamPool: Sendable {
    public enum Balance: String, Sendable, CaseIterable {
        case roundRobin = "round-robin"
        case leastConnections = "least-connections"
        case sourceHash = "source-hash"
        case powerOfTwo = "power-of-two"
    }

    public final class Member: Sendable {
        public let address: SocketAddress
        private let health = Mutex(HealthState())
        private let active = Atomic<Int>(0)

        init(address: SocketAddress) { self.address = address }

        public var isUp: Bool { health.withLock { $0.isUp } }
        public var activeConnections: Int { active.load(ordering: .relaxed) }

        /// Returns true when the member's state changed.
        public func record(success: Bool, settings: HealthCheckSettings) -> Bool {
            health.withLock { $0.record(success: success, rise: settings.rise, fall: settings.fall) }
        }

        /// Counts a connection against the member until the lease is dropped.
        func lease() -> ConnectionLease {
            active.add(1, ordering: .relaxed)
            return ConnectionLease(.poolMember(self))
        }

        func leaseReleased() {
            active.subtract(1, ordering: .relaxed)
        }
    }

    public let name: String
    public let balance: Balance
    public let members: [Member]
    public let health: HealthCheckSettings
    private let next = Atomic<Int>(0)

    public init(name: String, members: [SocketAddress], balance: Balance, health: HealthCheckSettings) {
        self.name = name
        self.balance = balance
        self.members = members.map(Member.init)
        self.health = health
    }

    public func member(at address: SocketAddress) -> Member? { members.first { $0.address == address } }

    /// The healthy members to try, best first (an empty list: all are down). `source` is the
    /// client the connection is for, for source-hash affinity.
    public func candidates(source: SocketAddress?) -> [SocketAddress] {
        let up = members.filter(\.isUp)
        guard !up.isEmpty else { return [] }
        let first: Member
        switch balance {
        case .roundRobin:
            first = up[Int(UInt(bitPattern: next.add(1, ordering: .relaxed).oldValue) % UInt(up.count))]
        case .leastConnections:
            // Ties go round robin, so equal members share the load.
            let start = Int(UInt(bitPattern: next.add(1, ordering: .relaxed).oldValue) % UInt(up.count))
            let rotated = Array(up[start...] + up[..<start])
            first = rotated.min { $0.activeConnections < $1.activeConnections }!
        case .sourceHash:
            // Rendezvous hashing: when a member goes, only the sources that mapped to it move.
            let key = source.map { Self.hash($0.address.description) } ?? 0
            first = up.max { Self.mix(key, $0.address) < Self.mix(key, $1.address) }!
        case .powerOfTwo:
            let a = up.randomElement()!, b = up.randomElement()!
            first = a.activeConnections <= b.activeConnections ? a : b
        }
        // The rest follow, so one refused connect falls through to another healthy member.
        return [first.address] + up.filter { $0 !== first }.map(\.address)
    }

    private static func mix(_ key: UInt64, _ address: SocketAddress) -> UInt64 {
        var x = key ^ hash(address.description)
        x ^= x >> 33; x &*= 0xff51_afd7_ed55_8ccd; x ^= x >> 33; x &*= 0xc4ce_b9fe_1a85_ec53; x ^= x >> 33
        return x
    }

    /// FNV-1a: stable across processes (Swift's Hasher is seeded per process).
    static func hash(_ text: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return h
    }
}
