import ConvertProtocol
import DataPlane
import Logging

/// Configuration of the server endpoint (`mptcp-proxy server`).
public struct ServerConfiguration: Sendable {
    public var listen: [SocketAddress]
    public var keys: [ClientKey]
    /// Serve requests without a cookie. Off unless the operator says so explicitly.
    public var allowUnauthenticated = false
    public var timeouts = ConnectionTimeouts()
    public var loops = LoopGroup.coreCount
    public var fastOpenQueue: Int32 = 256
    /// Seconds a cookie timestamp may differ from our clock.
    public var maximumClockSkew: UInt64 = 60
    public var namespace: NetworkNamespace?
    /// Serve /metrics here (`metrics` in the file, `--metrics` on the command line).
    public var metrics: SocketAddress?

    public init(listen: [SocketAddress], keys: [ClientKey]) {
        self.listen = listen
        self.keys = keys
    }
}

/// The server endpoint: terminates MPTCP (plain TCP clients are served too), checks the
/// Convert request and its cookie, connects to the destination and relays.
public enum ProxyServer {
    public static func makeService(_ configuration: ServerConfiguration, logger: Logger,
                                   onEnd: (@Sendable (ConnectionRecord) -> Void)? = nil) -> ProxyService {
        var settings = ConvertAuthenticator.Settings()
        settings.freshness.past = configuration.maximumClockSkew * 1000
        settings.requireCookie = !configuration.allowUnauthenticated
        // Cookies stamped before this process started are refused: a restart reopens no replays.
        let authenticator = ConvertAuthenticator(keys: configuration.keys, settings: settings, floor: unixMilliseconds() - 1)
        let specs = configuration.listen.map { address in
            ListenerSpec(address: address, options: ListenerOptions(mptcp: true, fastOpenQueue: configuration.fastOpenQueue)) { context, socket in
                let peer = socket.peerAddress()
                ConnectionDriver(context: context, inbound: socket, peer: peer,
                                 frontend: ConvertFrontend(authenticator: authenticator, peer: peer),
                                 upstream: DirectUpstream(connectTimeout: context.timeouts.connect)).launch()
            }
        }
        return ProxyService(name: "server", role: .server, specs: specs, loops: configuration.loops, namespace: configuration.namespace,
                            timeouts: configuration.timeouts, logger: logger, onEnd: onEnd)
    }
}
