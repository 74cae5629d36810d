import CMPTCPNetlink
import DataPlane
import Glibc

/// One socket as sock_diag reports it: an MPTCP connection (protocol 262) or a TCP socket,
/// which is an MPTCP subflow when `subflow` is set.
public struct DiagSocket: Hashable, Sendable {
    /// The kernel's socket cookie: the same socket has the same cookie in every dump.
    public var cookie: UInt64
    public var state: TCPState
    public var local: SocketAddress
    public var remote: SocketAddress
    /// The device the socket is bound to (idiag_if); 0 = not bound.
    public var boundInterfaceIndex: Int32
    public var uid: UInt32
    public var inode: UInt32
    public var tcp: TCPCounters?
    public var mptcp: MPTCPCounters?
    public var subflow: SubflowIdentity?

    /// struct tcp_info: the fields a monitor shows.
    public struct TCPCounters: Hashable, Sendable {
        public var rttMicroseconds: UInt32
        public var rttVarianceMicroseconds: UInt32
        public var congestionWindow: UInt32
        public var mss: UInt32
        public var unacked: UInt32
        public var lost: UInt32
        public var retransmitting: UInt32
        public var totalRetransmits: UInt32
        public var segmentsOut: UInt32
        public var segmentsIn: UInt32
        public var bytesAcked: UInt64
        public var bytesReceived: UInt64
        public var bytesSent: UInt64
        public var bytesRetransmitted: UInt64
        public var deliveryRate: UInt64  // bytes per second, the kernel's estimate
        public var rtoMicroseconds: UInt32

        public init(rttMicroseconds: UInt32 = 0, rttVarianceMicroseconds: UInt32 = 0, congestionWindow: UInt32 = 0, mss: UInt32 = 0,
                    unacked: UInt32 = 0, lost: UInt32 = 0, retransmitting: UInt32 = 0, totalRetransmits: UInt32 = 0,
                    segmentsOut: UInt32 = 0, segmentsIn: UInt32 = 0, bytesAcked: UInt64 = 0, bytesReceived: UInt64 = 0,
                    bytesSent: UInt64 = 0, bytesRetransmitted: UInt64 = 0, deliveryRate: UInt64 = 0, rtoMicroseconds: UInt32 = 0) {
            self.rttMicroseconds = rttMicroseconds
            self.rttVarianceMicroseconds = rttVarianceMicroseconds
            self.congestionWindow = congestionWindow
            self.mss = mss
            self.unacked = unacked
            self.lost = lost
            self.retransmitting = retransmitting
            self.totalRetransmits = totalRetransmits
            self.segmentsOut = segmentsOut
            self.segmentsIn = segmentsIn
            self.bytesAcked = bytesAcked
            self.bytesReceived = bytesReceived
            self.bytesSent = bytesSent
            self.bytesRetransmitted = bytesRetransmitted
            self.deliveryRate = deliveryRate
            self.rtoMicroseconds = rtoMicroseconds
        }
    }

    /// struct mptcp_info of an MPTCP connection.
    public struct MPTCPCounters: Hashable, Sendable {
        public var token: UInt32
        public var subflowsTotal: Int
        public var fallback: Bool
        public var bytesSent: UInt64
        public var bytesReceived: UInt64
        public var bytesAcked: UInt64
        public var bytesRetransmitted: UInt64

        public init(token: UInt32, subflowsTotal: Int, fallback: Bool = false, bytesSent: UInt64 = 0, bytesReceived: UInt64 = 0,
                    bytesAcked: UInt64 = 0, bytesRetransmitted: UInt64 = 0) {
            self.token = token
            self.subflowsTotal = subflowsTotal
            self.fallback = fallback
            self.bytesSent = bytesSent
            self.bytesReceived = bytesReceived
            self.bytesAcked = bytesAcked
            self.bytesRetransmitted = bytesRetransmitted
        }
    }

    /// The MPTCP ULP attributes of a subflow.
    public struct SubflowIdentity: Hashable, Sendable {
        /// Equals the owning connection's token (mptcpi_token).
        public var localToken: UInt32
        /// 0 on the initial (MP_CAPABLE) subflow.
        public var remoteToken: UInt32
        public var localID: UInt8
        public var remoteID: UInt8
        public var flags: UInt32

        public init(localToken: UInt32, remoteToken: UInt32 = 0, localID: UInt8 = 0, remoteID: UInt8 = 0, flags: UInt32 = 0) {
            self.localToken = localToken
            self.remoteToken = remoteToken
            self.localID = localID
            self.remoteID = remoteID
            self.flags = flags
        }

        /// MPTCP_SUBFLOW_FLAG_BKUP_LOC / _REM: we, or the peer, asked for backup priority.
        public var localBackup: Bool { flags & 0x20 != 0 }
        public var remoteBackup: Bool { flags & 0x10 != 0 }
        /// MP_JOIN subflow (not the initial MP_CAPABLE one).
        public var isJoin: Bool { flags & (0x4 | 0x8) != 0 }
        public var fullyEstablished: Bool { flags & 0x40 != 0 }
    }

    public init(cookie: UInt64, state: TCPState, local: SocketAddress, remote: SocketAddress, boundInterfaceIndex: Int32 = 0,
                uid: UInt32 = 0, inode: UInt32 = 0, tcp: TCPCounters? = nil, mptcp: MPTCPCounters? = nil, subflow: SubflowIdentity? = nil) {
        self.cookie = cookie
        self.state = state
        self.local = local
        self.remote = remote
        self.boundInterfaceIndex = boundInterfaceIndex
        self.uid = uid
        self.inode = inode
        self.tcp = tcp
        self.mptcp = mptcp
        self.subflow = subflow
    }

    init(_ raw: mpx_diag_socket) {
        let local = IPAddress(family: raw.family, raw: raw.src)
        let remote = IPAddress(family: raw.family, raw: raw.dst)
        self.init(cookie: raw.cookie, state: TCPState(rawValue: raw.state) ?? .unknown,
                  local: SocketAddress(local, port: raw.sport), remote: SocketAddress(remote, port: raw.dport),
                  boundInterfaceIndex: Int32(bitPattern: raw.ifindex), uid: raw.uid, inode: raw.inode)
        if raw.has_tcp_info != 0 {
            tcp = TCPCounters(
                rttMicroseconds: raw.rtt_us, rttVarianceMicroseconds: raw.rttvar_us, congestionWindow: raw.snd_cwnd,
                mss: raw.snd_mss, unacked: raw.unacked, lost: raw.lost, retransmitting: raw.retrans,
                totalRetransmits: raw.total_retrans, segmentsOut: raw.segs_out, segmentsIn: raw.segs_in,
                bytesAcked: raw.bytes_acked, bytesReceived: raw.bytes_received, bytesSent: raw.bytes_sent,
                bytesRetransmitted: raw.bytes_retrans, deliveryRate: raw.delivery_rate, rtoMicroseconds: raw.rto_us)
        }
        if raw.has_mptcp_info != 0 {
            let info = raw.mptcp
            mptcp = MPTCPCounters(
                token: info.mptcpi_token, subflowsTotal: Int(info.mptcpi_subflows_total),
                fallback: info.mptcpi_flags & MPX_MPTCP_INFO_FLAG_FALLBACK != 0,
                bytesSent: info.mptcpi_bytes_sent, bytesReceived: info.mptcpi_bytes_received,
                bytesAcked: info.mptcpi_bytes_acked, bytesRetransmitted: info.mptcpi_bytes_retrans)
        }
        if raw.is_subflow != 0 {
            subflow = SubflowIdentity(localToken: raw.token_loc, remoteToken: raw.token_rem,
                                      localID: raw.subflow_id_loc, remoteID: raw.subflow_id_rem, flags: raw.subflow_flags)
        }
    }
}

/// TCP states as sock_diag numbers them (MPTCP sockets use the same numbers).
public enum TCPState: UInt8, Hashable, Sendable, CustomStringConvertible {
    case established = 1, synSent, synReceived, finWait1, finWait2, timeWait, close, closeWait, lastAck, listen, closing
    case unknown = 0

    public var description: String {
        switch self {
        case .established: return "ESTAB"
        case .synSent: return "SYN-SENT"
        case .synReceived: return "SYN-RECV"
        case .finWait1: return "FIN-WAIT-1"
        case .finWait2: return "FIN-WAIT-2"
        case .timeWait: return "TIME-WAIT"
        case .close: return "CLOSE"
        case .closeWait: return "CLOSE-WAIT"
        case .lastAck: return "LAST-ACK"
        case .listen: return "LISTEN"
        case .closing: return "CLOSING"
        case .unknown: return "?"
        }
    }
}

/// Which sockets a sock_diag dump asks for.
public enum DiagProtocol: UInt32, Sendable {
    case tcp = 6
    case mptcp = 262
}

extension NetlinkRecord {
    /// Parses the messages of a sock_diag datagram from a dump of `protocol` sockets.
    public static func parseSockDiag(_ bytes: [UInt8], protocol diagProtocol: DiagProtocol) -> [NetlinkRecord] {
        var records: [NetlinkRecord] = []
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            var raw = mpx_nl_record()
            while mpx_diag_next(buffer.baseAddress, buffer.count, &offset, diagProtocol.rawValue, &raw) == 1 {
                records.append(NetlinkRecord(raw))
            }
        }
        return records
    }
}

/// A TCP socket named the way the kernel's established table finds it: its 4-tuple and the
/// device it is bound to (a socket bound to a device is found only under that device).
public struct DiagSocketKey: Hashable, Sendable, CustomStringConvertible {
    public var local: SocketAddress
    public var remote: SocketAddress
    public var boundInterfaceIndex: Int32

    public init(local: SocketAddress, remote: SocketAddress, boundInterfaceIndex: Int32 = 0) {
        self.local = local
        self.remote = remote
        self.boundInterfaceIndex = boundInterfaceIndex
    }

    public init(_ socket: DiagSocket) {
        self.init(local: socket.local, remote: socket.remote, boundInterfaceIndex: socket.boundInterfaceIndex)
    }

    public var description: String { "\(local) -> \(remote)\(boundInterfaceIndex != 0 ? " dev \(boundInterfaceIndex)" : "")" }

    var raw: mpx_diag_key {
        var out = mpx_diag_key()
        out.family = local.address.familyByte
        out.sport = local.port
        out.dport = remote.port
        out.ifindex = UInt32(bitPattern: boundInterfaceIndex)
        out.src = local.address.raw16
        out.dst = remote.address.raw16
        return out
    }
}

/// sock_diag for the calling thread's network namespace. Listing sockets needs no privilege;
/// the kernel shows every socket of the namespace.
public final class SockDiagClient {
    let socket: NetlinkSocket

    public init() throws(NetlinkError) {
        socket = try NetlinkSocket(bus: 4 /* NETLINK_SOCK_DIAG */, operation: "open sock_diag")
    }

    /// Every socket of `protocol` (IPv4 and IPv6, or the `families` given), except TIME_WAIT
    /// and SYN_RECV minisockets.
    public func sockets(_ diagProtocol: DiagProtocol, families: Set<Int32> = [AF_INET, AF_INET6]) throws(NetlinkError) -> [DiagSocket] {
        var all: [DiagSocket] = []
        for family in [UInt8(AF_INET), UInt8(AF_INET6)] where families.contains(Int32(family)) {
            let operation = "sock_diag dump \(diagProtocol) \(family == UInt8(AF_INET) ? "IPv4" : "IPv6")"
            var sequence: Int32 = 0
            try socket.run(operation) { handle, error in
                sequence = mpx_diag_request_dump(handle, family, diagProtocol.rawValue, error)
                return sequence
            }
            let records = try socket.collectDump(sequence: UInt32(sequence), operation: operation) {
                NetlinkRecord.parseSockDiag($0, protocol: diagProtocol)
            }
            for case .diagSocket(let found) in records { all.append(found) }
        }
        return all
    }

    /// The TCP sockets with these keys now, each found by an exact lookup in the kernel's
    /// tables rather than a walk of them: a dump visits every bucket of the established hash
    /// table (262,144 on a 24 GiB host, about 4 ms), a lookup one. Keys are sent 64 to a
    /// datagram; a key with no socket now is left out of the answer.
    public func sockets(withKeys keys: [DiagSocketKey]) throws(NetlinkError) -> [DiagSocket] {
        var found: [DiagSocket] = []
        found.reserveCapacity(keys.count)
        var start = 0
        var buffer = [UInt8](repeating: 0, count: 8192)
        while start < keys.count {
            let batch = keys[start..<min(keys.count, start + Int(MPX_DIAG_LOOKUP_BATCH))].map(\.raw)
            start += batch.count
            var first: UInt32 = 0
            try socket.run("sock_diag lookups") { handle, error in
                batch.withUnsafeBufferPointer { mpx_diag_request_lookups(handle, $0.baseAddress, $0.count, &first, error) }
            }
            // Each request is answered by exactly one message: the socket, or an error
            // (ENOENT: no such socket). The kernel answers inside sendto, so every answer is
            // queued by now and the reads never wait: one that is not there is not coming.
            // Answers to an earlier batch that an error cut short carry other sequence
            // numbers and are passed over.
            var answered = 0
            while answered < batch.count {
                var error = mpx_nl_error()
                let count = buffer.withUnsafeMutableBytes { mpx_nl_receive(socket.handle, $0.baseAddress, $0.count, 1, &error) }
                if count < 0 { throw NetlinkError("sock_diag lookups", error) }
                if count == 0 { break }
                buffer.withUnsafeBytes { bytes in
                    var offset = 0
                    var raw = mpx_nl_record()
                    while mpx_diag_next(bytes.baseAddress, Int(count), &offset, DiagProtocol.tcp.rawValue, &raw) == 1 {
                        guard raw.seq &- first < UInt32(batch.count) else { continue }
                        answered += 1
                        if raw.kind == Int32(MPX_REC_DIAG_SOCKET.rawValue) { found.append(DiagSocket(raw.diag)) }
                    }
                }
            }
        }
        return found
    }
}
