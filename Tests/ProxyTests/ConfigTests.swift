import ConvertProtocol
import DataPlane
import Glibc
@testable import Proxy
import Testing

@Suite("Configuration and key files")
struct ConfigTests {
    let goodKey = String(repeating: "ab", count: 32)

    func temporaryFile(_ name: String, _ text: String) -> String {
        let directory = "/tmp/mptcp-proxy-config-test-\(getpid())"
        mkdir(directory, 0o700)
        let path = "\(directory)/\(name)"
        let file = fopen(path, "w")!
        fputs(text, file)
        fclose(file)
        return path
    }

    @Test("key files: errors name file, line and key")
    func keyFileErrors() throws {
        let cases: [(String, String)] = [
            ("gw1 \(goodKey)\ngw1 \(goodKey)\n", "keys:2: gw1: duplicate key id (first on line 1)"),
            ("# comment\n\ngw1 abc\n", "keys:3: gw1: key is not an even number of hex digits"),
            ("gw1 abcd\n", "keys:1: gw1: key is 2 bytes, at least 16 are required"),
            ("gw/1 \(goodKey)\n", "keys:1: gw/1: key id must be"),
            ("gw1\n", "keys:1: expected `ID HEXKEY`, found 1 fields"),
        ]
        for (text, expected) in cases {
            #expect { try KeyFile.parse(text, file: "keys") } throws: { "\($0)".hasPrefix(expected) }
        }
        #expect(try KeyFile.parse("gw1 \(goodKey) # trailing comment\n", file: "keys").map(\.id) == ["gw1"])
    }

    @Test("client configuration loads forwards and names the line of each mistake")
    func clientConfig() throws {
        let key = temporaryFile("client.key", "gw1 \(goodKey)\n")
        let good = temporaryFile("client.toml", """
            server = "10.9.9.9:4443"
            key-file = "\(key)"
            idle-timeout-ms = 60_000
            metrics = "127.0.0.1:9100"
            [[forward]]
            listen = "0.0.0.0:8080"
            to = "10.20.0.2:80"
            [[forward]]
            listen = "[::]:8443"   # comment
            to = "[2001:db8::1]:443"
            """)
        let config = try ClientConfiguration.load(path: good)
        #expect(config.forwards.count == 2)
        #expect(config.forwards[1].destination.description == "[2001:db8::1]:443")
        #expect(config.timeouts.idle == 60_000)
        #expect(config.upstream.key.id == "gw1")
        #expect(config.metrics?.description == "127.0.0.1:9100")

        let cases: [(String, String)] = [
            ("server = \"10.9.9.9:4443\"\nkey-file = \"\(key)\"\n[[forward]]\nlisten = \"0.0.0.0:8080\"\nto = \"10.20.0.2\"\n", ":5: to: \"10.20.0.2\" has no :PORT"),
            ("server = \"10.9.9.9:4443\"\nkey-file = \"\(key)\"\nserver-port = 5\n", ":3: server-port: unknown key"),
            ("server = 4443\n", ":1: server: must be a \"string\""),
            ("key-file = \"\(key)\"\n[[forward]]\nlisten = \"0.0.0.0:1\"\nto = \"1.2.3.4:5\"\n", ": server: required key is missing"),
            ("server = \"1.2.3.4:5\"\nserver = \"1.2.3.4:6\"\n", ":2: server: key set twice (first on line 1)"),
            ("server = \"1.2.3.4:5\"\nkey-file = \"\(key)\"\nidle-timeout-ms = 5\n[[forward]]\nlisten = \"0.0.0.0:1\"\nto = \"1.2.3.4:5\"\n", ":3: idle-timeout-ms: 5 is outside"),
            ("server = \"1.2.3.4:5\nkey-file = \"x\"\n", ":1: server: value"),
            ("server = \"1.2.3.4:5\"\nkey-file = \"\(key)\"\nmetrics = \"localhost:9100\"\n[[forward]]\nlisten = \"0.0.0.0:1\"\nto = \"1.2.3.4:5\"\n", ":3: metrics: \"localhost:9100\": \"localhost\" is not an IPv4 address"),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let path = temporaryFile("bad\(index).toml", text)
            #expect { try ClientConfiguration.load(path: path) } throws: { error in
                let message = "\(error)"
                return message.hasPrefix(path) && message.contains(expected)
            }
        }
    }

    @Test("client configuration: several servers in order, their health checks, and the mistakes")
    func clientServers() throws {
        let key = temporaryFile("client.key", "gw1 \(goodKey)\n")
        let forward = "[[forward]]\nlisten = \"0.0.0.0:8080\"\nto = \"10.20.0.2:80\"\n"
        let good = temporaryFile("servers.toml", """
            server = ["10.9.9.9:4443", "[2001:db8::9]:4443"]
            key-file = "\(key)"
            server-check-interval-ms = 500
            server-check-timeout-ms = 400
            server-check-rise = 3
            server-check-fall = 1
            server-attempt-timeout-ms = 800
            \(forward)
            """)
        let config = try ClientConfiguration.load(path: good)
        #expect(config.upstream.servers.map(\.description) == ["10.9.9.9:4443", "[2001:db8::9]:4443"])
        #expect(config.serverHealth.interval == 500 && config.serverHealth.timeout == 400)
        #expect(config.serverHealth.rise == 3 && config.serverHealth.fall == 1 && config.serverHealth.attemptTimeout == 800)
        let single = try ClientConfiguration.load(path: temporaryFile("single.toml", "server = \"10.9.9.9:4443\"\nkey-file = \"\(key)\"\n\(forward)"))
        #expect(single.upstream.servers.map(\.description) == ["10.9.9.9:4443"])
        #expect(single.serverHealth == ServerHealthSettings())

        let cases: [(String, String)] = [
            ("server = [\"10.9.9.9:4443\", \"10.9.9.9:4443\"]\nkey-file = \"\(key)\"\n\(forward)", "server: a server is listed twice"),
            ("server = []\nkey-file = \"\(key)\"\n\(forward)", "server: required key is missing"),
            ("server = [\"10.9.9.9\"]\nkey-file = \"\(key)\"\n\(forward)", "has no :PORT"),
            ("server = \"10.9.9.9:1\"\nkey-file = \"\(key)\"\nserver-check-interval-ms = 5\n\(forward)", ":3: server-check-interval-ms: 5 is outside"),
            ("server = \"10.9.9.9:1\"\nkey-file = \"\(key)\"\nserver-check-fall = 0\n\(forward)", ":3: server-check-fall: 0 is outside"),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let path = temporaryFile("servers-bad\(index).toml", text)
            #expect { try ClientConfiguration.load(path: path) } throws: { error in
                let message = "\(error)"
                return message.hasPrefix(path) && message.contains(expected)
            }
        }
    }

    @Test("server configuration requires keys unless unauthenticated relaying is explicit")
    func serverConfig() throws {
        let keys = temporaryFile("server.keys", "gw1 \(goodKey)\ngw2 \(goodKey)\n")
        let config = try ServerConfiguration.load(path: temporaryFile("server.toml", "listen = \"0.0.0.0:4443\"\nkeys = \"\(keys)\"\n"))
        #expect(config.keys.map(\.id) == ["gw1", "gw2"])
        let missing = temporaryFile("server-nokeys.toml", "listen = \"0.0.0.0:4443\"\n")
        #expect { try ServerConfiguration.load(path: missing) } throws: { "\($0)".contains("keys: required key is missing") }
        let open = try ServerConfiguration.load(path: temporaryFile("server-open.toml", "listen = \"0.0.0.0:4443\"\nallow-unauthenticated = true\n"))
        #expect(open.allowUnauthenticated)
    }

    @Test("mptcp-receive-buffer: both roles, 0 or 64 KiB...64 MiB, defaults 4 MiB (client) and autotuning (server)")
    func mptcpReceiveBuffer() throws {
        let keys = temporaryFile("buffer.keys", "gw1 \(goodKey)\n")
        let server = try ServerConfiguration.load(path: temporaryFile("buffer-server.toml", "listen = \"0.0.0.0:4443\"\nkeys = \"\(keys)\"\nmptcp-receive-buffer = 1_048_576\n"))
        #expect(server.mptcpReceiveBuffer == 1 << 20)
        #expect(ServerConfiguration(listen: [], keys: []).mptcpReceiveBuffer == 0)
        let key = temporaryFile("buffer-client.key", "gw1 \(goodKey)\n")
        let clientText = "server = \"10.9.9.9:4443\"\nkey-file = \"\(key)\"\n[[forward]]\nlisten = \"127.0.0.1:8080\"\nto = \"10.0.0.2:80\"\n"
        let plain = try ClientConfiguration.load(path: temporaryFile("buffer-client.toml", clientText))
        #expect(plain.upstream.receiveBuffer == MPTCPReceiveBuffer.clientDefault)
        let autotuned = try ClientConfiguration.load(path: temporaryFile("buffer-client0.toml", "mptcp-receive-buffer = 0\n" + clientText))
        #expect(autotuned.upstream.receiveBuffer == 0)
        for bad in ["1000", "67108865", "-1"] {
            let path = temporaryFile("buffer-bad.toml", "mptcp-receive-buffer = \(bad)\n" + clientText)
            #expect { try ClientConfiguration.load(path: path) } throws: { "\($0)".contains("mptcp-receive-buffer") }
        }
    }

    @Test("server configuration: rules, limits, pools, listeners and key pools, CRLF line ends")
    func serverPolicyConfig() throws {
        let keys = temporaryFile("policy.keys", "gw-1 \(goodKey)\r\ngw-2 \(goodKey)\r\n")
        let path = temporaryFile("policy.toml", [
            "listen = [\"0.0.0.0:4443\", \"[::]:4443\"]",
            "keys = \"\(keys)\"",
            "max-connections = 2_000",
            "max-connections-per-key = 300",
            "max-handshakes-per-source = 32",
            "new-connections-per-source-per-s = 50",
            "max-future-skew-s = 2",
            "default-action = \"deny\"",
            "[[rule]]",
            "action = \"allow\"",
            "to = [\"10.0.5.0/24\", \"fd00::/8\"]",
            "ports = [5432, \"8000-8080\"]",
            "keys = [\"gw-1\"]",
            "proxy-protocol = true",
            "[[rule]]",
            "action = \"allow\"",
            "name = \"web\"",
            "ports = [80, 443]",
            "[[pool]]",
            "name = \"api\"",
            "members = [\"10.0.6.1:80\", \"10.0.6.2:80\"]",
            "balance = \"least-connections\"",
            "check-interval-ms = 500",
            "check-send = \"GET /health HTTP/1.0\\r\\n\\r\\n\"",
            "check-expect = \"200\"",
            "[[listener]]",
            "listen = \"0.0.0.0:4444\"",
            "pool = \"api\"",
            "[[key-pool]]",
            "key = \"gw-2\"",
            "pool = \"api\"",
        ].joined(separator: "\r\n") + "\r\n")
        let config = try ServerConfiguration.load(path: path)
        #expect(config.listen.map(\.description) == ["0.0.0.0:4443", "[::]:4443", "0.0.0.0:4444"])
        #expect(config.listeners[2].pool == "api")
        #expect(config.limits.maxConnections == 2_000 && config.limits.maxConnectionsPerKey == 300)
        #expect(config.limits.maxHandshakesPerSource == 32 && config.limits.newConnectionsPerSourcePerSecond == 50)
        #expect(config.maximumFutureSkew == 2 && config.defaultAction == .deny)
        #expect(config.rules.count == 2)
        #expect(config.rules[0].networks.map(\.description) == ["10.0.5.0/24", "fd00::/8"])
        #expect(config.rules[0].ports == [PortRange(5432, 5432), PortRange(8000, 8080)])
        #expect(config.rules[0].keys == ["gw-1"] && config.rules[0].proxyProtocol)
        #expect(config.rules[0].name.hasPrefix("rule 1 (policy.toml:9)"))
        #expect(config.rules[1].name == "web")
        #expect(config.pools == [.init(name: "api", members: [try SocketAddress(parsing: "10.0.6.1:80"), try SocketAddress(parsing: "10.0.6.2:80")],
                                       balance: .leastConnections, health: { var h = HealthCheckSettings(); h.interval = 500
                                           h.send = Array("GET /health HTTP/1.0\r\n\r\n".utf8); h.expect = Array("200".utf8); return h }())])
        #expect(config.keyPools == ["gw-2": "api"])

        let base = "listen = \"0.0.0.0:4443\"\nkeys = \"\(keys)\"\n"
        let cases: [(String, String)] = [
            (base + "[[rule]]\naction = \"maybe\"\n", ":4: action: must be \"allow\" or \"deny\""),
            (base + "[[rule]]\naction = \"allow\"\nto = [\"10.0.5.1/24\"]\n", ":5: to: \"10.0.5.1/24\": host bits are set"),
            (base + "[[rule]]\naction = \"deny\"\nports = [\"90-80\"]\n", ":5: ports: \"90-80\": the range runs backwards"),
            (base + "[[rule]]\naction = \"deny\"\nkeys = [\"nobody\"]\n", ":5: keys: \"nobody\" is not a key id"),
            (base + "[[listener]]\nlisten = \"0.0.0.0:1\"\npool = \"none\"\n", ":5: pool: no [[pool]] is named \"none\""),
            (base + "[[pool]]\nname = \"p\"\n", ":3: members: a pool needs at least one member"),
            (base + "[[pool]]\nname = \"p\"\nmembers = [\"1.2.3.4:5\"]\nbalance = \"random\"\n", ":6: balance: must be one of round-robin"),
            (base + "[[key-pool]]\nkey = \"gw-9\"\npool = \"p\"\n", ":4: key: \"gw-9\" is not a key id"),
            (base + "max-connections = 0\n", ":3: max-connections: 0 is outside 1...1000000"),
            (base + "idle-timeout-ms = 0\n", ":3: idle-timeout-ms: 0 is outside 1000...86400000"),
            (base + "listen2 = [1, [2]]\n", ":3: listen2: arrays do not nest"),
            (base + "default-action = \"drop\"\n", ":3: default-action: must be"),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let bad = temporaryFile("bad-server\(index).toml", text)
            #expect { try ServerConfiguration.load(path: bad) } throws: { error in
                "\(error)".hasPrefix(bad) && "\(error)".contains(expected)
            }
        }
    }

    @Test("a key file readable by others is a loud warning")
    func keyFilePermissions() {
        let path = temporaryFile("loose.key", "gw1 \(goodKey)\n")
        chmod(path, 0o644)
        #expect(KeyFile.permissionWarning(path: path)?.contains("chmod 600") == true)
        chmod(path, 0o600)
        #expect(KeyFile.permissionWarning(path: path) == nil)
    }

    @Test("addresses parse and reject with a reason")
    func addresses() throws {
        #expect(try SocketAddress(parsing: "10.0.0.1:80").description == "10.0.0.1:80")
        #expect(try SocketAddress(parsing: "[::1]:443").description == "[::1]:443")
        for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "::1:80", "host:80"] {
            #expect(throws: AddressParseError.self) { try SocketAddress(parsing: bad) }
        }
    }
}
