import CMPTCPNetlink
import CLinuxShim
import DataPlane
import Glibc

/// What MPTCP_INFO says about one MPTCP socket (a subset of struct mptcp_info, Linux 6.18).
public struct MPTCPConnectionInfo: Equatable, Sendable {
    /// All subflows, the initial one included (mptcpi_subflows_total).
    public var subflowsTotal: Int
    public var token: UInt32
    public var fallback: Bool
    public var remoteKeyReceived: Bool
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    public var bytesRetransmitted: UInt64
    /// Subflows the in-kernel path manager created from local endpoints
    /// (mptcpi_local_addr_used), and how many it may (mptcpi_local_addr_max).
    public var endpointsUsed: Int = 0
    public var endpointsMax: Int = 0
    /// Additional subflows the connection may have (mptcpi_subflows_max, the `subflows` limit).
    public var subflowsMax: Int = 0
}

/// One subflow of an MPTCP socket, as MPTCP_TCPINFO reports it.
public struct SubflowHandshake: Equatable, Sendable {
    /// The subflow's SYN is out and unanswered: a join under way.
    public var connecting: Bool
    /// Smoothed RTT in microseconds (for a fresh subflow, its SYN/SYN-ACK sample).
    public var rttMicroseconds: UInt32

    public init(connecting: Bool, rttMicroseconds: UInt32) {
        self.connecting = connecting
        self.rttMicroseconds = rttMicroseconds
    }
}

/// The transport a proxied connection really got.
public enum TransportKind: Equatable, Sendable, CustomStringConvertible {
    /// MPTCP with `subflows` subflows (at the moment it was asked).
    case mptcp(subflows: Int)
    /// An MPTCP socket whose peer or path did not speak MPTCP: plain TCP underneath.
    case fallback
    /// A plain TCP socket.
    case tcp

    public var description: String {
        switch self {
        case .mptcp(let n): return "mptcp(\(n) subflow\(n == 1 ? "" : "s"))"
        case .fallback: return "mptcp-fallback-tcp"
        case .tcp: return "tcp"
        }
    }

    public var subflows: Int {
        if case .mptcp(let n) = self { return n }
        return 1
    }
}

extension Socket {
    /// MPTCP_INFO, or nil where the kernel gives none: a plain TCP socket, or an MPTCP socket
    /// that fell back to TCP (EOPNOTSUPP, see shared/reference/kernel-mptcp.md §3.4).
    public func mptcpInfo() -> MPTCPConnectionInfo? {
        var info = mpx_mptcp_info()
        var length = socklen_t(MemoryLayout<mpx_mptcp_info>.size)
        guard getsockopt(fd, MPX_SOL_MPTCP, MPX_MPTCP_INFO, &info, &length) == 0 else { return nil }
        // A 6.1 kernel returns 48 bytes; subflows_total is then missing, count the extras + 1.
        let total = length >= 81 ? Int(info.mptcpi_subflows_total) : Int(info.mptcpi_subflows) + 1
        return MPTCPConnectionInfo(
            subflowsTotal: total,
            token: info.mptcpi_token,
            fallback: info.mptcpi_flags & MPX_MPTCP_INFO_FLAG_FALLBACK != 0,
            remoteKeyReceived: info.mptcpi_flags & MPX_MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED != 0,
            bytesSent: info.mptcpi_bytes_sent,
            bytesReceived: info.mptcpi_bytes_received,
            bytesRetransmitted: info.mptcpi_bytes_retrans,
            endpointsUsed: Int(info.mptcpi_local_addr_used),
            endpointsMax: Int(info.mptcpi_local_addr_max),
            subflowsMax: Int(info.mptcpi_subflows_max))
    }

    /// Each subflow's handshake state and RTT (MPTCP_TCPINFO), or nil where the kernel gives
    /// none (plain TCP, or fallback). At most 8 subflows are reported.
    public func mptcpSubflowHandshakes() -> [SubflowHandshake]? {
        withUnsafeTemporaryAllocation(of: mpx_subflow_handshake.self, capacity: 8) { buffer in
            let n = mpx_mptcp_subflow_handshakes(fd, buffer.baseAddress, Int32(buffer.count))
            guard n >= 0 else { return nil }
            // TCP_SYN_SENT (linux/tcp_states.h): the join's SYN is unanswered.
            return buffer.prefix(Int(n)).map { SubflowHandshake(connecting: $0.tcp_state == 2, rttMicroseconds: $0.rtt_us) }
        }
    }

    /// The local address of each subflow (MPTCP_SUBFLOW_ADDRS), or nil where the kernel gives
    /// none (plain TCP, or fallback). At most 8 subflows are reported.
    public func mptcpSubflowLocalAddresses() -> [IPAddress]? {
        withUnsafeTemporaryAllocation(of: mpx_subflow_local.self, capacity: 8) { buffer in
            let n = mpx_mptcp_subflow_locals(fd, buffer.baseAddress, Int32(buffer.count))
            guard n >= 0 else { return nil }
            return buffer.prefix(Int(n)).compactMap { entry -> IPAddress? in
                let bytes = withUnsafeBytes(of: entry.address) { Array($0) }
                switch Int32(entry.family) {
                case AF_INET: return .v4(AddressBytes(bytes[0..<4]))
                case AF_INET6: return .v6(AddressBytes(bytes[0..<16]))
                default: return nil
                }
            }
        }
    }

    /// Which transport a connected socket ended up with. `isMPTCP`, when the caller already
    /// knows the socket's protocol, saves the SO_PROTOCOL query.
    public func transportKind(isMPTCP: Bool? = nil) -> TransportKind {
        guard isMPTCP ?? (transportProtocol() == MPX_IPPROTO_MPTCP) else { return .tcp }
        guard let info = mptcpInfo(), !info.fallback else { return .fallback }
        return .mptcp(subflows: max(1, info.subflowsTotal))
    }
}
