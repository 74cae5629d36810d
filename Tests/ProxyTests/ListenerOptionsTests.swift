import DataPlane
import Foundation
import Glibc
import NetworkTypes
import Testing

@Suite("Listener options")
struct ListenerOptionsTests {
    func receiveBuffer(_ socket: Socket) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(socket.fd, SOL_SOCKET, SO_RCVBUF, &value, &length)
        return value
    }

    /// Accepts one loopback connection on a listener made with `options`.
    func acceptOne(_ options: ListenerOptions) throws -> (listener: Socket, accepted: Socket, client: Socket) {
        let (listener, _) = try Socket.makeListener(at: SocketAddress(.v4([127, 0, 0, 1]), port: 0), options: options)
        let client = try Socket.makeStream(family: AF_INET, mptcp: options.mptcp).socket
        _ = try client.connect(to: listener.localAddress()!)
        var accepted: Socket?
        for _ in 0..<1000 where accepted == nil {
            accepted = try listener.accept()
            if accepted == nil { usleep(1000) }
        }
        return (listener, try #require(accepted), client)
    }

    @Test("receiveBuffer: the server's mptcp-receive-buffer reaches every accepted MPTCP connection, as the kernel doubles it (capped by rmem_max)")
    func receiveBufferIsInherited() throws {
        let requested: Int32 = 1 << 20
        let rmemMax = Int32((try? String(contentsOfFile: "/proc/sys/net/core/rmem_max", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? requested
        let set = try acceptOne(ListenerOptions(mptcp: true, receiveBuffer: requested))
        defer { set.listener.close(); set.accepted.close(); set.client.close() }
        #expect(receiveBuffer(set.accepted) == 2 * min(requested, rmemMax))
        let unset = try acceptOne(ListenerOptions(mptcp: true))
        defer { unset.listener.close(); unset.accepted.close(); unset.client.close() }
        #expect(receiveBuffer(unset.accepted) != receiveBuffer(set.accepted), "without the option the kernel's own size stays")
    }
}
