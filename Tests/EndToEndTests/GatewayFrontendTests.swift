import DataPlane
import Foundation
import Glibc
import Proxy
import TestSupport
import Testing

/// The client's ways in beside port forwards, on the testbed with real clients: SOCKS5 and HTTP
/// CONNECT (our own handshake before a checked transfer, and curl), and interception by
/// nftables REDIRECT and TPROXY for a LAN host with no proxy settings.
@Suite("Gateway frontends on the testbed", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct GatewayFrontendTests {
    static let socksPort: UInt16 = 1080
    static let httpPort: UInt16 = 3128
    static let redirectPort: UInt16 = 12345
    static let tproxyPort: UInt16 = 12346
    /// On vps's loopback: reachable only by a name the server resolves ("localhost" on gw is
    /// gw's own loopback, where nothing listens on these ports).
    static let loopbackHashPort: UInt16 = 9001
    static let loopbackHTTPPort: UInt16 = 9002

    static func address(_ text: String) -> SocketAddress { try! SocketAddress(parsing: text) }

    /// The chain with SOCKS5 and HTTP CONNECT on gw, and a server that may reach vps's loopback.
    func withProxyChain(_ body: (ProxyChain, HashServer) throws -> Void) throws {
        try withChain(adjustServer: { config in
            config.rules.append(AccessRule(action: .allow, networks: [try IPNetwork(parsing: "127.0.0.0/8"), try IPNetwork(parsing: "::1/128")],
                                           name: "vps loopback (test)"))
        }, adjustClient: { config in
            config.socks5 = [Self.address("\(Testbed.gatewayLANAddress):\(Self.socksPort)")]
            config.httpConnect = [Self.address("\(Testbed.gatewayLANAddress):\(Self.httpPort)")]
        }) { chain in
            let loopbackHash = try HashServer(namespace: chain.testbed.namespace(.vps), address: Self.address("127.0.0.1:\(Self.loopbackHashPort)"))
            defer { loopbackHash.stop() }
            try body(chain, loopbackHash)
        }
    }

    // MARK: handshakes as a LAN application does them

    /// SOCKS5 CONNECT to a name or an address; returns the reply code.
    static func socksConnect(_ fd: Int32, host: String, port: UInt16) throws -> UInt8 {
        try send(fd, [5, 1, 0])
        guard try BlockingSocket.readExactly(fd, 2) == [5, 0] else { throw TrafficError("SOCKS5 method not accepted") }
        var request: [UInt8] = [5, 1, 0]
        if let address = IPAddress(parsing: host) {
            request += (address.bytes.count == 4 ? [1] : [4]) + address.bytes
        } else {
            request += [3, UInt8(host.utf8.count)] + Array(host.utf8)
        }
        try send(fd, request + [UInt8(port >> 8), UInt8(port & 0xff)])
        let reply = try BlockingSocket.readExactly(fd, 10)
        return reply[1]
    }

    /// HTTP CONNECT; returns the status line.
    static func httpConnect(_ fd: Int32, target: String) throws -> String {
        try send(fd, Array("CONNECT \(target) HTTP/1.1\r\nHost: \(target)\r\n\r\n".utf8))
        var header: [UInt8] = []
        while !(header.count >= 4 && header.suffix(4) == [13, 10, 13, 10]) {
            header += try BlockingSocket.readExactly(fd, 1)
            if header.count > 4096 { throw TrafficError("no end of the response header") }
        }
        return String(decoding: header, as: UTF8.self).components(separatedBy: "\r\n")[0]
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
    }

    /// One checked transfer from the LAN host to `proxy`, with `prelude` first.
    func transfer(_ chain: ProxyChain, via proxy: SocketAddress, size: Int, seed: UInt64, prelude: @escaping (Int32) throws -> Void) throws -> TransferResult {
        try OSThread.run(in: chain.testbed.namespace(.lan)) {
            try HashServer.transfer(to: proxy, upload: size, download: size, seed: seed, timeoutSeconds: 30, prelude: prelude)
        }
    }

    /// Opens a connection from the LAN host and runs `body` on it.
    func fromLAN<T>(_ chain: ProxyChain, to address: SocketAddress, _ body: @escaping (Int32) throws -> T) throws -> T {
        try OSThread.run(in: chain.testbed.namespace(.lan)) {
            let fd = try BlockingSocket.connect(to: address, timeoutSeconds: 10)
            defer { close(fd) }
            return try body(fd)
        }
    }

    @Test("SOCKS5 and HTTP CONNECT: names resolved by the server, addresses too; every byte checked both ways")
    func proxyProtocols() throws {
        try withProxyChain { chain, _ in
            let socks = Self.address("\(Testbed.gatewayLANAddress):\(Self.socksPort)")
            let http = Self.address("\(Testbed.gatewayLANAddress):\(Self.httpPort)")
            let size = 300_000
            var result = try transfer(chain, via: socks, size: size, seed: 11) { fd in
                let code = try Self.socksConnect(fd, host: "localhost", port: Self.loopbackHashPort)
                guard code == 0 else { throw TrafficError("SOCKS5 reply \(code)") }
            }
            #expect(result.uploaded == size && result.downloaded == size)
            result = try transfer(chain, via: socks, size: size, seed: 12) { fd in
                let code = try Self.socksConnect(fd, host: Testbed.originAddress, port: ProxyChain.originPort)
                guard code == 0 else { throw TrafficError("SOCKS5 reply \(code)") }
            }
            #expect(result.downloaded == size)
            result = try transfer(chain, via: http, size: size, seed: 13) { fd in
                let status = try Self.httpConnect(fd, target: "localhost:\(Self.loopbackHashPort)")
                guard status.hasPrefix("HTTP/1.1 200") else { throw TrafficError("HTTP CONNECT: \(status)") }
            }
            #expect(result.downloaded == size)
            let clientEnds = chain.clientRecords.wait(for: 3)
            #expect(Set(clientEnds.map(\.destination)) == ["localhost:\(Self.loopbackHashPort)", "\(Testbed.originAddress):\(ProxyChain.originPort)"])
            #expect(clientEnds.allSatisfy { $0.reason == .completed && $0.transport == .mptcp(subflows: 3) }, "\(clientEnds)")
            let serverEnds = chain.serverRecords.wait(for: 3)
            #expect(serverEnds.filter { $0.destination == "localhost:\(Self.loopbackHashPort)" }.count == 2, "the name reached the server unresolved")
        }
    }

    @Test("SOCKS5 and HTTP CONNECT errors: refused port, unknown name, refused range, bad command, not the protocol at all")
    func proxyErrors() throws {
        try withProxyChain { chain, _ in
            let socks = Self.address("\(Testbed.gatewayLANAddress):\(Self.socksPort)")
            let http = Self.address("\(Testbed.gatewayLANAddress):\(Self.httpPort)")
            // Closed port on origin: the destination resets, SOCKS5 says connection refused (5).
            #expect(try fromLAN(chain, to: socks) { try Self.socksConnect($0, host: Testbed.originAddress, port: 1) } == 5)
            // A name no resolver knows: host unreachable (4).
            #expect(try fromLAN(chain, to: socks) { try Self.socksConnect($0, host: "no-such-host.invalid", port: 80) } == 4)
            // RFC 1918 is refused by the server's built-in rules. The address is gw's eth end, inside
            // the testbed: were the rule broken, the attempt would still stay in the namespaces.
            #expect(try fromLAN(chain, to: socks) { try Self.socksConnect($0, host: "10.1.2.1", port: 80) } == 2)
            #expect(try fromLAN(chain, to: http) { try Self.httpConnect($0, target: "10.1.2.1:80") }.hasPrefix("HTTP/1.1 403"))
            #expect(try fromLAN(chain, to: http) { try Self.httpConnect($0, target: "\(Testbed.originAddress):1") }.hasPrefix("HTTP/1.1 502"))
            #expect(try fromLAN(chain, to: http) { try Self.httpConnect($0, target: "no-port") }.hasPrefix("HTTP/1.1 400"))
            // UDP ASSOCIATE: command not supported (7).
            let udp = try fromLAN(chain, to: socks) { fd -> UInt8 in
                try Self.send(fd, [5, 1, 0])
                _ = try BlockingSocket.readExactly(fd, 2)
                try Self.send(fd, [5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
                return try BlockingSocket.readExactly(fd, 10)[1]
            }
            #expect(udp == 7)
            // An HTTP request to the SOCKS5 port: reset at once, no reply, no hang.
            let errno = try fromLAN(chain, to: socks) { fd -> Int32 in
                try Self.send(fd, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                var byte: UInt8 = 0
                return recv(fd, &byte, 1, 0) < 0 ? Glibc.errno : 0
            }
            #expect(errno == ECONNRESET)
            let ends = chain.clientRecords.wait(for: 8)
            #expect(ends.count == 8 && ends.allSatisfy { $0.reason != .completed }, "\(ends.map(\.reason))")
        }
    }

    @Test("curl through SOCKS5 (--socks5-hostname) and HTTP CONNECT (-p -x): to an HTTP server only the server can name, and to one on origin")
    func curl() throws {
        try withProxyChain { chain, _ in
            let body = (0..<40_000).map { String($0 % 997, radix: 16) }.joined(separator: ",")
            let server = try TextHTTPServer(namespace: chain.testbed.namespace(.vps), address: Self.address("127.0.0.1:\(Self.loopbackHTTPPort)"), body: body)
            defer { server.stop() }
            let url = "http://localhost:\(Self.loopbackHTTPPort)/"
            let viaSOCKS = try chain.testbed.exec(.lan, ["curl", "-sS", "--max-time", "20", "--socks5-hostname", "\(Testbed.gatewayLANAddress):\(Self.socksPort)", url])
            #expect(viaSOCKS == body, "curl through SOCKS5 got \(viaSOCKS.count) of \(body.count) bytes")
            let viaHTTP = try chain.testbed.exec(.lan, ["curl", "-sS", "--max-time", "20", "-p", "-x", "http://\(Testbed.gatewayLANAddress):\(Self.httpPort)", url])
            #expect(viaHTTP == body, "curl through HTTP CONNECT got \(viaHTTP.count) of \(body.count) bytes")
            // And to an HTTP server on origin, by address.
            let onOrigin = try TextHTTPServer(namespace: chain.testbed.namespace(.origin), address: Self.address("\(Testbed.originAddress):8000"), body: body)
            defer { onOrigin.stop() }
            let originURL = "http://\(Testbed.originAddress):8000/"
            #expect(try chain.testbed.exec(.lan, ["curl", "-sS", "--max-time", "20", "--socks5-hostname", "\(Testbed.gatewayLANAddress):\(Self.socksPort)", originURL]) == body)
            #expect(try chain.testbed.exec(.lan, ["curl", "-sS", "--max-time", "20", "-p", "-x", "http://\(Testbed.gatewayLANAddress):\(Self.httpPort)", originURL]) == body)
            // And curl's view of a refusal.
            #expect(throws: (any Error).self) {
                try chain.testbed.exec(.lan, ["curl", "-sS", "--max-time", "20", "--socks5-hostname", "\(Testbed.gatewayLANAddress):\(Self.socksPort)", "http://10.1.2.1/"])
            }
        }
    }

    @Test("IPv6 all the way: LAN host to IPv6 SOCKS5 and HTTP CONNECT listeners, MPTCP to the server's IPv6 address, an IPv6 origin; every byte checked")
    func ipv6() throws {
        try withChain(ipv6Path: true, adjustClient: { config in
            config.socks5 = [Self.address("[\(Testbed.gatewayLANAddress6)]:\(Self.socksPort)")]
            config.httpConnect = [Self.address("[\(Testbed.gatewayLANAddress6)]:\(Self.httpPort)")]
            config.upstream.servers = [Self.address("[\(Testbed.serverAddress6)]:\(ProxyChain.serverPort)")]
        }) { chain in
            let origin6 = try HashServer(namespace: chain.testbed.namespace(.origin), address: Self.address("[\(Testbed.originAddress6)]:\(ProxyChain.originPort)"))
            defer { origin6.stop() }
            let size = 300_000
            let socks = try transfer(chain, via: Self.address("[\(Testbed.gatewayLANAddress6)]:\(Self.socksPort)"), size: size, seed: 41) { fd in
                let code = try Self.socksConnect(fd, host: Testbed.originAddress6, port: ProxyChain.originPort)
                guard code == 0 else { throw TrafficError("SOCKS5 reply \(code)") }
            }
            #expect(socks.uploaded == size && socks.downloaded == size)
            let http = try transfer(chain, via: Self.address("[\(Testbed.gatewayLANAddress6)]:\(Self.httpPort)"), size: size, seed: 42) { fd in
                let status = try Self.httpConnect(fd, target: "[\(Testbed.originAddress6)]:\(ProxyChain.originPort)")
                guard status.hasPrefix("HTTP/1.1 200") else { throw TrafficError("HTTP CONNECT: \(status)") }
            }
            #expect(http.downloaded == size)
            let ends = chain.clientRecords.wait(for: 2)
            #expect(ends.allSatisfy { $0.destination == "[\(Testbed.originAddress6)]:\(ProxyChain.originPort)" && $0.peer?.address.bytes.count == 16 }, "\(ends)")
            #expect(ends.allSatisfy { if case .mptcp = $0.transport { true } else { false } }, "the server leg is MPTCP over IPv6: \(ends.map(\.transport))")
            let serverEnds = chain.serverRecords.wait(for: 2)
            #expect(serverEnds.allSatisfy { $0.peer?.address.bytes.count == 16 }, "the server saw the client over IPv6: \(serverEnds)")
        }
    }

    @Test("interception: a LAN host with no proxy settings, redirected by nftables REDIRECT and by TPROXY; every byte checked; the interception port itself is refused")
    func transparent() throws {
        let secondOriginPort: UInt16 = 9003
        try withChain(adjustClient: { config in
            // Dual-stack listeners: IPv4 connections arrive on them as IPv4-mapped.
            config.transparent = [Self.address("[::]:\(Self.redirectPort)"), Self.address("[::]:\(Self.tproxyPort)")]
        }) { chain in
            let tproxied = try HashServer(namespace: chain.testbed.namespace(.origin), address: Self.address("\(Testbed.originAddress):\(secondOriginPort)"))
            defer { tproxied.stop() }
            let origin6 = try HashServer(namespace: chain.testbed.namespace(.origin), address: Self.address("[\(Testbed.originAddress6)]:\(ProxyChain.originPort)"))
            defer { origin6.stop() }
            let rules = """
            table inet mpxtest {
                chain nat_prerouting {
                    type nat hook prerouting priority dstnat; policy accept;
                    iifname "lan0" tcp dport \(ProxyChain.originPort) redirect to :\(Self.redirectPort)
                }
                chain mangle_prerouting {
                    type filter hook prerouting priority mangle; policy accept;
                    iifname "lan0" tcp dport \(secondOriginPort) meta mark set 1 tproxy ip to :\(Self.tproxyPort) accept
                }
            }
            """
            _ = try chain.testbed.exec(.gw, ["sh", "-c", "printf '%s\\n' '\(rules)' | nft -f - && ip rule add fwmark 1 lookup 100 && ip route add local 0.0.0.0/0 dev lo table 100"])
            let size = 400_000
            // The LAN host connects to origin's own address; nothing on it knows of a proxy.
            let redirected = try OSThread.run(in: chain.testbed.namespace(.lan)) {
                try HashServer.transfer(to: Self.address("\(Testbed.originAddress):\(ProxyChain.originPort)"), upload: size, download: size, seed: 21, timeoutSeconds: 30)
            }
            #expect(redirected.uploaded == size && redirected.downloaded == size)
            let tproxyResult = try OSThread.run(in: chain.testbed.namespace(.lan)) {
                try HashServer.transfer(to: Self.address("\(Testbed.originAddress):\(secondOriginPort)"), upload: size, download: size, seed: 22, timeoutSeconds: 30)
            }
            #expect(tproxyResult.downloaded == size)
            // IPv6: the same REDIRECT rule (an inet table), the destination from IP6T_SO_ORIGINAL_DST.
            let redirected6 = try OSThread.run(in: chain.testbed.namespace(.lan)) {
                try HashServer.transfer(to: Self.address("[\(Testbed.originAddress6)]:\(ProxyChain.originPort)"), upload: size, download: size, seed: 23, timeoutSeconds: 30)
            }
            #expect(redirected6.downloaded == size)
            let ends = chain.clientRecords.wait(for: 3)
            #expect(Set(ends.map(\.destination)) == ["\(Testbed.originAddress):\(ProxyChain.originPort)", "\(Testbed.originAddress):\(secondOriginPort)",
                                                     "[\(Testbed.originAddress6)]:\(ProxyChain.originPort)"])
            #expect(ends.allSatisfy { $0.reason == .completed && $0.transport == .mptcp(subflows: 3) }, "\(ends)")
            // Straight at the interception port: not intercepted, so refused rather than looped.
            let errno = try fromLAN(chain, to: Self.address("\(Testbed.gatewayLANAddress):\(Self.redirectPort)")) { fd -> Int32 in
                var byte: UInt8 = 0
                return recv(fd, &byte, 1, 0) < 0 ? Glibc.errno : 0
            }
            #expect(errno == ECONNRESET)
        }
    }
}

/// `mptcp-proxy client --install-rules` as an operator runs it: the real binary in gw, rules
/// installed, a crash (SIGKILL) leaving them behind, the next start replacing them, a clean
/// stop removing them, and a LAN host's transfers intercepted all along.
@Suite("Interception rules on the testbed", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct InterceptionRulesTests {
    static let binary = Testbed.repositoryRoot + "/.build/debug/mptcp-proxy"

    func start(_ chain: ProxyChain, keyFile: String, mode: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", chain.testbed.namespace(.gw).name, Self.binary, "client",
                             "--server", "\(Testbed.serverAddress):\(ProxyChain.serverPort)", "--key-file", keyFile,
                             "--transparent", "[::]:12399", "--install-rules", "--intercept", mode, "--lan-interface", "lan0",
                             "--no-default-bypass", "--bypass", "10.10.0.0/24", "--bypass", "fd00:10::/64", "--block-quic", "--no-path-manager", "--loops", "1"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return process
    }

    func table(_ chain: ProxyChain) -> String? { try? chain.testbed.exec(.gw, ["nft", "list", "table", "inet", "mptcp_proxy"]) }

    func interceptedTransfer(_ chain: ProxyChain, seed: UInt64, to target: String = "\(Testbed.originAddress):\(ProxyChain.originPort)") throws -> TransferResult {
        try OSThread.run(in: chain.testbed.namespace(.lan)) {
            try HashServer.transfer(to: try SocketAddress(parsing: target),
                                    upload: 200_000, download: 200_000, seed: seed, timeoutSeconds: 20)
        }
    }

    @Test("installed on start, left by SIGKILL, replaced on restart (REDIRECT then TPROXY), removed on SIGTERM; transfers intercepted and checked")
    func lifecycle() throws {
        try withChain { chain in
            let origin6 = try HashServer(namespace: chain.testbed.namespace(.origin), address: try SocketAddress(parsing: "[\(Testbed.originAddress6)]:\(ProxyChain.originPort)"))
            defer { origin6.stop() }
            let keyFile = "/tmp/mptcp-proxy-rules-test-\(getpid()).key"
            let key = ProxyChain.key
            let hex = (0..<32).map { String(format: "%02x", $0) }.joined()  // ProxyChain.key's secret
            try "\(key.id) \(hex)\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
            chmod(keyFile, 0o600)
            defer { unlink(keyFile) }

            let first = try start(chain, keyFile: keyFile, mode: "redirect")
            defer { if first.isRunning { kill(first.processIdentifier, SIGKILL); first.waitUntilExit() } }
            #expect(millisecondsUntil(seconds: 10) { table(chain) != nil } != nil, "rules never appeared")
            let before = chain.serverRecords.all.count
            _ = try interceptedTransfer(chain, seed: 31)
            #expect(chain.serverRecords.wait(for: before + 1).count == before + 1, "the transfer went through the binary and the server")
            #expect(table(chain)?.contains("redirect to :12399") == true)
            #expect(table(chain)?.contains("udp dport 443 reject") == true)

            kill(first.processIdentifier, SIGKILL)
            first.waitUntilExit()
            #expect(table(chain) != nil, "a crash leaves the rules behind (the next start replaces them)")

            let second = try start(chain, keyFile: keyFile, mode: "tproxy")
            defer { if second.isRunning { kill(second.processIdentifier, SIGKILL); second.waitUntilExit() } }
            #expect(millisecondsUntil(seconds: 10) { table(chain)?.contains("tproxy to :12399") == true } != nil, "the restart did not replace the rules")
            let text = table(chain) ?? ""
            #expect(!text.contains("redirect") && text.components(separatedBy: "chain prerouting").count == 2, "exactly one table, the new one:\n\(text)")
            #expect((try? chain.testbed.exec(.gw, ["ip", "rule"]))?.contains("lookup 28016") == true)
            #expect((try? chain.testbed.exec(.gw, ["ip", "-6", "rule"]))?.contains("lookup 28016") == true)
            _ = try interceptedTransfer(chain, seed: 32)
            _ = try interceptedTransfer(chain, seed: 33, to: "[\(Testbed.originAddress6)]:\(ProxyChain.originPort)")
            #expect(chain.serverRecords.wait(for: before + 3).count == before + 3, "IPv4 and IPv6 through TPROXY")

            kill(second.processIdentifier, SIGTERM)
            second.waitUntilExit()
            #expect(table(chain) == nil, "rules left after a clean stop")
            #expect((try? chain.testbed.exec(.gw, ["ip", "rule"]))?.contains("lookup 28016") == false, "policy routing left after a clean stop")
        }
    }
}

/// An origin that serves one connection at a time on a thread of its own: `handle` gets each
/// accepted descriptor, which is closed after it returns. The test origins below are each a
/// `handle`.
final class SequentialOrigin: @unchecked Sendable {
    private let listenFD: Int32
    private var thread: OSThread?
    private let stopped = Locked(false)

    init(namespace: NetworkNamespace, address: SocketAddress, name: String, handle: @escaping @Sendable (Int32) -> Void) throws {
        listenFD = try OSThread.run(in: namespace) { try BlockingSocket.listen(on: address) }
        thread = OSThread(name: name) { [self] in
            while !stopped.value {
                let fd = accept(listenFD, nil, nil)
                guard fd >= 0 else { return }
                handle(fd)
                close(fd)
            }
        }
    }

    func stop() {
        stopped.update { $0 = true }
        shutdown(listenFD, Int32(SHUT_RDWR))
        thread?.join()
        close(listenFD)
    }
}

/// A minimal HTTP/1.1 origin for curl: answers every request with `body`, then closes.
final class TextHTTPServer: Sendable {
    private let origin: SequentialOrigin

    init(namespace: NetworkNamespace, address: SocketAddress, body: String) throws {
        let body = Array(body.utf8)
        origin = try SequentialOrigin(namespace: namespace, address: address, name: "http-origin") { fd in
            var header: [UInt8] = []
            var byte: UInt8 = 0
            while !(header.count >= 4 && header.suffix(4) == [13, 10, 13, 10]), header.count < 8192, recv(fd, &byte, 1, 0) == 1 {
                header.append(byte)
            }
            let head = Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
            try? (head + body).withUnsafeBytes { try BlockingSocket.writeAll(fd, $0) }
        }
    }

    func stop() { origin.stop() }
}

/// `mptcp-proxy check` and `keygen` as an operator runs them, in a namespace of their own that
/// has only loopback: each condition set for real, the report read back.
@Suite("mptcp-proxy check in a namespace", .serialized, .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct HostCheckCommandTests {
    static let binary = Testbed.repositoryRoot + "/.build/debug/mptcp-proxy"

    /// Runs the binary in `namespace`; returns its output and whether it exited 0.
    func run(_ namespace: String, _ arguments: [String]) -> (output: String, success: Bool) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace, Self.binary] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do { try process.run() } catch { return ("\(error)", false) }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (String(decoding: data, as: UTF8.self), process.terminationStatus == 0)
    }

    @Test("MPTCP off, limits at zero, strict rp_filter, a server that is not there, one that answers, a wrong key")
    func conditions() throws {
        let namespace = "mpxcheck\(getpid() % 10000)"
        _ = try Testbed.run(["ip", "netns", "add", namespace])
        defer { _ = try? Testbed.run(["ip", "netns", "del", namespace]) }
        _ = try Testbed.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        _ = try Testbed.run(["ip", "-n", namespace, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"])
        let directory = "/tmp/mptcp-proxy-check-\(getpid())"
        _ = try Testbed.run(["mkdir", "-p", directory])
        defer { _ = try? Testbed.run(["rm", "-rf", directory]) }

        // keygen: the client's file and the server's line, mode 600; never overwrites.
        #expect(run(namespace, ["keygen", "gw-check", "--client-file", "\(directory)/client.key", "--server-file", "\(directory)/clients.keys"]).success)
        #expect(try Testbed.run(["stat", "-c", "%a", "\(directory)/client.key"]).hasPrefix("600"))
        #expect(try Testbed.run(["cat", "\(directory)/client.key"]) == (try Testbed.run(["cat", "\(directory)/clients.keys"])))
        #expect(!run(namespace, ["keygen", "gw-check", "--client-file", "\(directory)/client.key"]).success, "an existing key file is never overwritten")
        #expect(run(namespace, ["keygen", "other"]).output.hasPrefix("other "), "no files: the line on stdout")

        _ = try Testbed.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.mptcp.enabled=0"])
        var report = run(namespace, ["check"])
        #expect(!report.success && report.output.contains("BLOCKING MPTCP: net.mptcp.enabled is 0"), "\(report.output)")

        _ = try Testbed.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.mptcp.enabled=1"])
        _ = try Testbed.run(["ip", "-n", namespace, "mptcp", "limits", "set", "subflows", "0", "add_addr_accepted", "0"])
        _ = try Testbed.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.conf.uplink0.rp_filter=1"])
        report = run(namespace, ["check"])
        #expect(report.success, "warnings only: \(report.output)")
        #expect(report.output.contains("WARNING MPTCP limits: subflows 0"), "\(report.output)")
        #expect(report.output.contains("WARNING rp_filter: strict reverse-path filtering on uplink0"), "\(report.output)")

        // The server endpoint: nothing listening, then a real server on loopback, then a wrong key.
        report = run(namespace, ["check", "--server", "127.0.0.1:4443", "--key-file", "\(directory)/client.key"])
        #expect(!report.success && report.output.contains("BLOCKING server 127.0.0.1:4443: no connection"), "\(report.output)")
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", namespace, Self.binary, "server", "--listen", "127.0.0.1:4443", "--keys", "\(directory)/clients.keys", "--loops", "1"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() } }
        #expect(millisecondsUntil(seconds: 5) { run(namespace, ["check", "--server", "127.0.0.1:4443", "--key-file", "\(directory)/client.key"]).output.contains("ok      server 127.0.0.1:4443: answers the Info exchange over MPTCP") } != nil)
        #expect(run(namespace, ["keygen", "stranger", "--client-file", "\(directory)/stranger.key"]).success)
        report = run(namespace, ["check", "--server", "127.0.0.1:4443", "--key-file", "\(directory)/stranger.key"])
        #expect(!report.success && report.output.contains("refused: Not Authorized"), "\(report.output)")
    }
}
