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

    @Test("addresses parse and reject with a reason")
    func addresses() throws {
        #expect(try SocketAddress(parsing: "10.0.0.1:80").description == "10.0.0.1:80")
        #expect(try SocketAddress(parsing: "[::1]:443").description == "[::1]:443")
        for bad in ["10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "::1:80", "host:80"] {
            #expect(throws: AddressParseError.self) { try SocketAddress(parsing: bad) }
        }
    }
}
