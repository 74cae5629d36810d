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
        let specs = configuration.forwards.map { forward in
            // LAN side is plain TCP: hosts behind the gateway know nothing of MPTCP.
            ListenerSpec(address: forward.listen, options: ListenerOptions(mptcp: false)) { context, socket in
                let peer = socket.peerAddress()
                ConnectionDriver(context: context, inbound: socket, peer: peer,
                                 frontend: FixedDestinationFrontend(destination: .address(forward.destination), source: peer),
                                 upstream: ConvertUpstream(endpoint: upstream, servers: servers, connectTimeout: context.timeouts.connect)).launch()
            }
        }
        return ProxyService(name: "client", role: .client, specs: specs, loops: configuration.loops, namespace: configuration.namespace,
                            timeouts: configuration.timeouts, logger: logger, metrics: metrics,
                            companions: [ServerHealthMonitor(servers: servers, key: upstream.key)], onEnd: onEnd)
    }
}
