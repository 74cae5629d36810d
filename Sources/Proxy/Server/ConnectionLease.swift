import NetworkTypes

/// Something a connection holds until it ends (a limit's slot, a pool member's count): released
/// exactly once, when the holder lets go of it.
///
/// What to release is a case, not a closure: a closure is an allocation of its own beside the
/// lease's, and a server connection holds three leases (its slot, its source's handshake, its
/// key's slot), six allocations per connection where three do (callgrind, B3).
public final class ConnectionLease: @unchecked Sendable {  // immutable; released on one thread
    enum Claim {
        /// A slot of the server's connection limit.
        case connection(AdmissionControl)
        /// One of its source's handshakes in progress (keyed by the source's limit key).
        case handshake(AdmissionControl, sourceKey: IPAddress)
        /// A slot of its key's connection limit.
        case key(AdmissionControl, String)
        case poolMember(UpstreamPool.Member)
        case custom(() -> Void)
    }

    private let claim: Claim

    init(_ claim: Claim) { self.claim = claim }

    public convenience init(_ release: @escaping () -> Void) { self.init(.custom(release)) }

    deinit {
        switch claim {
        case .connection(let admission): admission.connectionEnded()
        case .handshake(let admission, let sourceKey): admission.handshakeEnded(sourceKey: sourceKey)
        case .key(let admission, let key): admission.keyConnectionEnded(key)
        case .poolMember(let member): member.leaseReleased()
        case .custom(let release): release()
        }
    }
}

/// The leases one connection holds, the first two inline: a server connection holds two for
/// its whole life (its slot and its key's), and an array of them was 48 bytes of every idle
/// connection (B5). Dropping the holder, or `removeAll`, releases them.
struct HeldLeases {
    private var first: ConnectionLease?
    private var second: ConnectionLease?
    private var more: [ConnectionLease] = []

    init(_ leases: [ConnectionLease] = []) {
        append(contentsOf: leases)
    }

    mutating func append(_ lease: ConnectionLease) {
        if first == nil {
            first = lease
        } else if second == nil {
            second = lease
        } else {
            more.append(lease)
        }
    }

    mutating func append(contentsOf leases: [ConnectionLease]) {
        for lease in leases { append(lease) }
    }

    mutating func removeAll() {
        first = nil
        second = nil
        more = []
    }
}
