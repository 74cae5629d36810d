import ConvertProtocol
import DataPlane
import Logging

/// One port forward: plain TCP accepted on `listen` goes to `destination` through the server.
public struct Forward: Sendable, Equatable {
    public var listen: SocketAddress
    public var destination: SocketAddress

    public init(listen: SocketAddress, destination: SocketAddress) {
        self.listen = listen
        self.destination = destination
    }
}

/// Configuration of the gateway side (`mptcp-proxy client`).
public struct ClientConfiguration: Sendable {
    public var forwards: [Forward]
    /// SOCKS5 listeners (RFC 1928 CONNECT; names travel to the server unresolved).
    public var socks5: [SocketAddress] = []
    /// HTTP CONNECT listeners.
    public var httpConnect: [SocketAddress] = []
    /// Listeners for connections intercepted by nftables: REDIRECT (original destination from
    /// conntrack) or TPROXY (the accepted socket's local address).
    public var transparent: [SocketAddress] = []
    /// Users SOCKS5 and HTTP CONNECT require (nil: no credentials asked).
    public var proxyUsers: ProxyUsers?
    public var upstream: UpstreamEndpoint
    /// How the servers of `upstream` are checked and failed over.
    public var serverHealth = ServerHealthSettings()
    public var timeouts = ConnectionTimeouts()
    public var loops = LoopGroup.coreCount
    public var namespace: NetworkNamespace?
    /// Serve /metrics here (`metrics` in the file, `--metrics` on the command line).
    public var metrics: SocketAddress?

    public init(forwards: [Forward], upstream: UpstreamEndpoint) {
        self.forwards = forwards
        self.upstream = upstream
    }
}

/// The converter on the gateway: accepts plain TCP and carries each connection over MPTCP.
public enum ProxyClient {
    public static func makeService(_ configuration: ClientConfiguration, logger: Logger,
                                   onEnd: (@Sendable (ConnectionRecord) -> Void)? = nil) -> ProxyService {
        let upstream = configuration.upstream
        let metrics = ProxyMetrics(role: "client")
        let servers = ServerEndpoints(upstream.servers, settings: configuration.serverHealth, logger: logger, metrics: metrics)
        func convertUpstream(_ context: ConnectionContext) -> ConvertUpstream {
            ConvertUpstream(endpoint: upstream, servers: servers, connectTimeout: context.timeouts.connect)
        }
        // Every LAN side is plain TCP: hosts behind the gateway know nothing of MPTCP.
        var specs = configuration.forwards.map { forward in
            ListenerSpec(address: forward.listen, options: ListenerOptions(mptcp: false)) { context, socket, peer in
                ConnectionDriver(context: context, inbound: socket, peer: peer,
                                 frontend: FixedDestinationFrontend(destination: .address(forward.destination), source: peer),
                                 upstream: convertUpstream(context)).launch()
            }
        }
        let users = configuration.proxyUsers
        specs += configuration.socks5.map { address in
            ListenerSpec(address: address, options: ListenerOptions(mptcp: false), kind: "SOCKS5") { context, socket, peer in
                ConnectionDriver(context: context, inbound: socket, peer: peer, frontend: SOCKS5Frontend(users: users, peer: peer),
                                 upstream: convertUpstream(context)).launch()
            }
        }
        specs += configuration.httpConnect.map { address in
            ListenerSpec(address: address, options: ListenerOptions(mptcp: false), kind: "HTTP CONNECT") { context, socket, peer in
                ConnectionDriver(context: context, inbound: socket, peer: peer, frontend: HTTPConnectFrontend(users: users, peer: peer),
                                 upstream: convertUpstream(context)).launch()
            }
        }
        specs += configuration.transparent.map { address in
            // A plain TCP listener: an MPTCP one loses the conntrack entry SO_ORIGINAL_DST reads.
            ListenerSpec(address: address, options: ListenerOptions(mptcp: false, transparent: true), kind: "transparent") { context, socket, peer in
                let frontend: FixedDestinationFrontend
                switch InterceptedDestination.of(socket, listener: address) {
                case .success(let destination):
                    frontend = FixedDestinationFrontend(destination: .address(destination), source: peer)
                case .failure(let failure):
                    frontend = FixedDestinationFrontend(refusing: failure, source: peer)
                }
                ConnectionDriver(context: context, inbound: socket, peer: peer, frontend: frontend, upstream: convertUpstream(context)).launch()
            }
        }
        let service = ProxyService(name: "client", role: .client, specs: specs, loops: configuration.loops, namespace: configuration.namespace,
                                   timeouts: configuration.timeouts, logger: logger, metrics: metrics,
                                   companions: [ServerHealthMonitor(servers: servers, key: upstream.key)], onEnd: onEnd)
        service.serverEndpoints = servers
        return service
    }
}

/// Where an intercepted connection was going.
enum InterceptedDestination {
    /// REDIRECT (and DNAT) leave the original destination in the conntrack entry; TPROXY leaves
    /// it as the accepted socket's local address. A connection aimed at the interception port
    /// itself is refused: relaying it would send it back to this listener through the server.
    static func of(_ socket: Socket, listener: SocketAddress) -> Result<SocketAddress, ConvertProtocolError> {
        guard let local = socket.localAddress() else {
            return .failure(ConvertProtocolError(.networkFailure, "intercepted connection without a local address"))
        }
        // Conntrack answers for untranslated connections too (with the local address), so a
        // REDIRECTed one is the one whose answer differs from where it landed.
        let destination = (try? socket.originalDestination()) ?? local
        let unspecified = listener.address.bytes.allSatisfy { $0 == 0 }
        if destination.port == listener.port && (unspecified || destination.address.normalized == listener.address.normalized) {
            return .failure(ConvertProtocolError(.notAuthorized, "connection to the interception port itself (\(destination)): not intercepted, refused so it cannot loop"))
        }
        return .success(SocketAddress(destination.address.normalized, port: destination.port))
    }
}
