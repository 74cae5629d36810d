import DataPlane
import MPTCPKernel

/// The MPTCP subflows the path health monitor samples, each named by the key an exact
/// sock_diag lookup needs, as a pure state machine: MPTCP events, dumps and lookup answers
/// in; the keys to look up, and whether a dump is needed, out.
///
/// Why: a sock_diag dump walks every bucket of the kernel's established hash table, about
/// 4 ms on this 24 GiB host whatever the number of sockets, and under the soak's churn dumps
/// every 100 ms made a link loss catch more connections with their request read and their
/// answer lost (decision 0012). Lookups by key cost one hash probe each. The MPTCP events name
/// every subflow that completes its handshake (established, sub_established) and every one
/// that closes (sub_closed, closed), so between dumps the list follows the kernel.
///
/// What the events do not name: a join still in SYN-SENT (the kernel says nothing until it
/// is answered or given up). Those are found by a dump, which the service still makes at a
/// slow rate, in an alert, and whenever this list cannot be trusted (`needsDump`).
public struct SubflowWatchList: Sendable {
    /// Beyond this many subflows the list stops following events and asks for dumps: a host
    /// with more is better served by one walk than by that many lookups, and the list's
    /// memory stays bounded whatever the kernel reports. Where the two cost the same, from
    /// `pm-sampling-cost` (300 subflows: a lookup about 5 µs, user space included; a dump's
    /// walk about 4 ms) and a guessed 1.5 µs a socket inside a dump: about 1,200.
    public let capacity: Int

    /// Key to the token of the connection it belongs to, and the reverse (`closed` names only
    /// the token): each event costs a lookup, not a walk of the list.
    private var tokens: [DiagSocketKey: UInt32] = [:]
    private var keysOfToken: [UInt32: Set<DiagSocketKey>] = [:]

    /// The next sample should be a dump: at start, after an events overrun, past capacity.
    public private(set) var needsDump = true

    public init(capacity: Int = 1_024) {
        self.capacity = capacity
    }

    public var count: Int { tokens.count }

    /// The subflows to look up: those whose local address is one of `paths`, in no order.
    public func keys(on paths: Set<IPAddress>) -> [DiagSocketKey] {
        tokens.keys.filter { paths.contains($0.local.address) }
    }

    /// An MPTCP event of this namespace.
    public mutating func apply(_ event: MPTCPEvent) {
        switch event.kind {
        case .established, .subflowEstablished:
            // Both carry the subflow's addresses and ports, and its device when bound.
            guard let token = event.token, let local = event.localAddress, let remote = event.remoteAddress,
                  event.localPort != 0, event.remotePort != 0 else { return }
            let key = DiagSocketKey(local: SocketAddress(local, port: event.localPort), remote: SocketAddress(remote, port: event.remotePort),
                                    boundInterfaceIndex: event.interfaceIndex ?? 0)
            if tokens[key] == nil && tokens.count >= capacity {
                needsDump = true
                return
            }
            insert(key, token: token)
        case .subflowClosed:
            guard let local = event.localAddress, let remote = event.remoteAddress else { return }
            let key = DiagSocketKey(local: SocketAddress(local, port: event.localPort), remote: SocketAddress(remote, port: event.remotePort),
                                    boundInterfaceIndex: event.interfaceIndex ?? 0)
            if tokens[key] != nil {
                remove(key)
            } else if let token = event.token, let candidates = keysOfToken[token] {
                // The event did not name the device the subflow is bound to: the 4-tuple does.
                for candidate in candidates where candidate.local == key.local && candidate.remote == key.remote { remove(candidate) }
            }
        case .closed:
            guard let token = event.token, let keys = keysOfToken.removeValue(forKey: token) else { return }
            for key in keys { tokens.removeValue(forKey: key) }
        case .created, .announced, .removed, .subflowPriority, .listenerCreated, .listenerClosed, nil:
            break
        }
    }

    /// The events were lost (the socket overran), or there are none to follow (no
    /// CAP_NET_ADMIN): only a dump can say which subflows exist.
    public mutating func eventsLost() { needsDump = true }

    /// A dump's subflows: the whole truth at that moment, so the list becomes exactly them.
    public mutating func replace(with subflows: [DiagSocket]) {
        tokens = [:]
        keysOfToken = [:]
        for socket in subflows {
            guard let identity = socket.subflow, tokens.count < capacity else { continue }
            insert(DiagSocketKey(socket), token: identity.localToken)
        }
        needsDump = subflows.count(where: { $0.subflow != nil }) > capacity
    }

    /// The answers to lookups of `asked`: a key with no socket now is gone (its close event
    /// may still be queued, or was lost).
    public mutating func refresh(asked: [DiagSocketKey], found: [DiagSocket]) {
        let present = Set(found.map { DiagSocketKey($0) })
        for key in asked where !present.contains(key) { remove(key) }
    }

    private mutating func insert(_ key: DiagSocketKey, token: UInt32) {
        if let old = tokens.updateValue(token, forKey: key), old != token {
            keysOfToken[old]?.remove(key)
            if keysOfToken[old]?.isEmpty == true { keysOfToken.removeValue(forKey: old) }
        }
        keysOfToken[token, default: []].insert(key)
    }

    private mutating func remove(_ key: DiagSocketKey) {
        guard let token = tokens.removeValue(forKey: key) else { return }
        keysOfToken[token]?.remove(key)
        if keysOfToken[token]?.isEmpty == true { keysOfToken.removeValue(forKey: token) }
    }
}
