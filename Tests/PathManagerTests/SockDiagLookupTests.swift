import CLinuxShim
import DataPlane
import Glibc
import MPTCPKernel
import Testing

/// Exact sock_diag lookups against the kernel, on loopback: what the dump shows, a lookup by
/// key shows too, and a key with no socket is left out.
@Suite("sock_diag lookups on the kernel", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct SockDiagLookupTests {
    /// An MPTCP connection over loopback: (client fd, accepted fd, listener fd), the client
    /// bound to `device` when given.
    func connection(device: String? = nil) throws -> (Int32, Int32, Int32) {
        let (listener, _) = try Socket.makeListener(at: SocketAddress(IPAddress(parsing: "127.0.0.1")!, port: 0),
                                                    options: ListenerOptions(mptcp: true, reusePort: false))
        let address = try #require(listener.localAddress())
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), MPX_IPPROTO_MPTCP)
        #expect(client >= 0)
        if let device {
            #expect(setsockopt(client, SOL_SOCKET, SO_BINDTODEVICE, device, socklen_t(device.utf8.count)) == 0, "SO_BINDTODEVICE: \(errno)")
        }
        #expect(address.withSockAddr { Glibc.connect(client, $0, $1) } == 0, "connect: \(errno)")
        var accepted: Int32 = -1
        for _ in 0..<100 where accepted < 0 {
            accepted = Glibc.accept(listener.fd, nil, nil)
            if accepted < 0 { usleep(10_000) }
        }
        #expect(accepted >= 0)
        let fd = dup(listener.fd)
        listener.close()
        return (client, accepted, fd)
    }

    func localAddress(_ fd: Int32) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return SocketAddress(storage: storage)!
    }

    @Test("a subflow found in the dump is found by its key, with the same cookie and token; 63 keys with no socket around it in the same two batches are left out")
    func lookupMatchesDump() throws {
        let (client, accepted, listener) = try connection()
        defer { close(client); close(accepted); close(listener) }
        let local = localAddress(client)
        let diag = try SockDiagClient()
        let dumped = try diag.sockets(.tcp, families: [AF_INET]).filter { $0.local == local && $0.subflow != nil }
        let subflow = try #require(dumped.first, "the client's subflow is not in the dump")
        let key = DiagSocketKey(subflow)
        // Ports no socket has (the listener is gone): 40 before the real key, 23 after, so
        // the answers span two datagrams of requests.
        let missing = (1...63).map { DiagSocketKey(local: SocketAddress(IPAddress(parsing: "127.0.0.2")!, port: UInt16($0)), remote: local) }
        let keys = Array(missing[0..<40]) + [key] + Array(missing[40...]) + [key]
        #expect(keys.count == 65)
        let found = try diag.sockets(withKeys: keys)
        #expect(found.count == 2, "\(found)")
        for socket in found {
            #expect(socket.cookie == subflow.cookie)
            #expect(socket.subflow?.localToken == subflow.subflow?.localToken)
            #expect(socket.state == .established)
            #expect(socket.tcp != nil)
        }
        // Once closed, its key finds nothing (or a socket on its way out, never another one).
        close(client)
        close(accepted)
        let after = try diag.sockets(withKeys: [key])
        #expect(after.allSatisfy { $0.cookie == subflow.cookie && $0.state != .established }, "\(after)")
    }

    @Test("a subflow bound to a device is found only under that device, as sub_established names it")
    func boundSubflowNeedsItsDevice() throws {
        let (client, accepted, listener) = try connection(device: "lo")
        defer { close(client); close(accepted); close(listener) }
        let local = localAddress(client)
        let diag = try SockDiagClient()
        let subflow = try #require(try diag.sockets(.tcp, families: [AF_INET]).first { $0.local == local && $0.subflow != nil })
        let loopbackIndex = Int32(if_nametoindex("lo"))
        #expect(subflow.boundInterfaceIndex == loopbackIndex)
        let unbound = DiagSocketKey(local: subflow.local, remote: subflow.remote, boundInterfaceIndex: 0)
        #expect(try diag.sockets(withKeys: [unbound]).isEmpty)
        #expect(try diag.sockets(withKeys: [DiagSocketKey(subflow)]).map(\.cookie) == [subflow.cookie])
    }
}
