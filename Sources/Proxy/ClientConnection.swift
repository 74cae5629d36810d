import CLinuxShim
import ConvertProtocol
import DataPlane
import Glibc
import MPTCPKernel

/// How the client reaches its server endpoint.
public struct UpstreamEndpoint: Sendable {
    public var server: SocketAddress
    public var key: ClientKey
    /// Ask for IPPROTO_MPTCP (falls back to TCP where the kernel refuses).
    public var mptcp: Bool
    /// Put the Convert request (and first client bytes) in the SYN with TCP Fast Open.
    public var fastOpen: Bool

    public init(server: SocketAddress, key: ClientKey, mptcp: Bool = true, fastOpen: Bool = true) {
        self.server = server
        self.key = key
        self.mptcp = mptcp
        self.fastOpen = fastOpen
    }
}

/// One LAN connection accepted by the client: dial the server over MPTCP with the signed
/// Convert request in the SYN, wait for the reply, then relay. Decisions are ClientHandshake's.
final class ClientConnection: ProxiedConnection {
    /// Largest first chunk of client bytes sent along with the request. Small enough that
    /// request and chunk fit in one SYN: measured on Linux 6.18, when a TCP_FASTOPEN_CONNECT
    /// MPTCP socket took only part of a larger first write into its SYN (16 KiB then) and the
    /// rest followed, about 1 connection in 2,500 delivered a 1,120-byte block of the stream
    /// ahead of the 15,060 bytes before it at the server (same length, reordered; 0 in 15,000
    /// with this limit or without TFO). The end-to-end tests' origin reports such divergences.
    static let initialDataLimit = 400
    /// Receive buffer of the MPTCP leg (see `begin`).
    static let mptcpReceiveBuffer: Int32 = 4 << 20

    private let upstream: UpstreamEndpoint
    private let destination: SocketAddress
    private var handshake = ClientHandshake(request: [])
    private var connecting = false
    private var initialBytes = 0

    init(context: ConnectionContext, inbound: Socket, destination: SocketAddress, upstream: UpstreamEndpoint) {
        self.upstream = upstream
        self.destination = destination
        super.init(context: context, inbound: inbound, role: .client)
        record.destination = "\(destination)"
        record.keyID = upstream.key.id
    }

    override var mptcpLeg: Socket? { outbound }

    override func begin() {
        do {
            // Whatever the LAN host already sent rides in the SYN behind the request.
            var first: [UInt8] = []
            if case .bytes(let bytes) = try read(upTo: Self.initialDataLimit, from: inbound) { first = bytes }
            initialBytes = first.count
            let request = try ConvertMessage.signedRequest(to: destination, key: upstream.key, timestamp: unixMilliseconds())
            handshake = ClientHandshake(request: request + first)

            let (socket, _) = try Socket.makeStream(family: upstream.server.family, mptcp: upstream.mptcp)
            outbound = socket
            try loop.register(socket.fd, events: EventLoop.streamEvents, handler: self)
            socket.setNoDelay()
            // Measured on Linux 6.18: an MPTCP socket read only with splice(2) never grows its
            // receive buffer (autotuning runs in recvmsg), so its window stays small and
            // downloads crawled at 2-4 Mbit/s over 90 Mbit/s of paths. A fixed buffer (the
            // kernel doubles it, capped by net.core.rmem_max) restores the full rate.
            try? socket.setOption(level: SOL_SOCKET, name: SO_RCVBUF, Self.mptcpReceiveBuffer, "SO_RCVBUF")
            if upstream.fastOpen {
                // Best effort: without TFO the request simply follows the handshake.
                try? socket.setOption(level: Int32(IPPROTO_TCP), name: MPX_TCP_FASTOPEN_CONNECT, 1, "TCP_FASTOPEN_CONNECT")
            }
            connecting = !(try socket.connect(to: upstream.server))
            perform(handshake.start())
        } catch let error as SystemError {
            finish(.connectFailed(error), reset: true)
        } catch {
            finish(.rejected(error as? ConvertProtocolError ?? ConvertProtocolError(.malformedMessage, "\(error)")), reset: true)
        }
    }

    private func perform(_ action: ClientHandshake.Action) {
        var next: ClientHandshake.Action? = action
        while let action = next, !isClosed {
            next = nil
            switch action {
            case .send(let bytes):
                if connecting {
                    staged = bytes  // sent once the connect completes
                    return
                }
                next = sendRequest(bytes)
            case .read(let limit):
                next = readReply(limit)
            case .startRelay:
                record.bytesUp = UInt64(initialBytes)
                if let kind = outbound?.transportKind(), kind == .fallback || kind == .tcp {
                    context.logger.warning("MPTCP not available to \(upstream.server): connection \(record.peer.map { "\($0)" } ?? "?") -> \(destination) fell back to plain TCP")
                }
                startRelay()
            case .close(let reason):
                // The LAN host must see a refused/reset connection, not a silent close.
                finish(reason, reset: true)
            }
        }
    }

    private var staged: [UInt8]?
    private var awaitingReply: Int?

    private func sendRequest(_ bytes: [UInt8]) -> ClientHandshake.Action? {
        guard let outbound else { return nil }
        do {
            return try send(bytes, on: outbound) ? handshake.requestSent() : nil
        } catch where error.errno == EINPROGRESS {
            // TFO without a cookie yet: the SYN went out without data; write again when connected.
            context.logger.debug("request deferred: TFO connect in progress")
            staged = bytes
            connecting = true
            return nil
        } catch {
            return failConnect(error)
        }
    }

    private func readReply(_ limit: Int) -> ClientHandshake.Action? {
        guard let outbound else { return nil }
        awaitingReply = limit
        do {
            switch try read(upTo: limit, from: outbound) {
            case .wouldBlock: return nil
            case .endOfStream: return handshake.peerClosed()
            case .bytes(let bytes): return handshake.received(bytes)
            }
        } catch {
            return failConnect(error)
        }
    }

    private func failConnect(_ error: SystemError) -> ClientHandshake.Action? {
        finish(.connectFailed(error), reset: true)
        return nil
    }

    override func handshakeDeadlinePassed() {
        guard !isClosed else { return }
        perform(handshake.timedOut())
    }

    override func handleEvents(_ events: UInt32, fd: Int32) {
        guard let outbound else { return }
        switch handshake.state {
        case .sendingRequest:
            guard fd == outbound.fd else { return }
            if connecting {
                guard events & (MPX_EPOLLOUT | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 else { return }
                let error = outbound.pendingError()
                if error != 0 {
                    finish(.connectFailed(SystemError("connect(\(upstream.server))", errno: error)), reset: true)
                    return
                }
                connecting = false
                if let bytes = staged {
                    staged = nil
                    if let next = sendRequest(bytes) { perform(next) }
                }
            } else if hasPendingSend {
                do {
                    if try flushSend(on: outbound) { perform(handshake.requestSent()) }
                } catch {
                    finish(.connectFailed(error), reset: true)
                }
            }
        case .awaitingReply:
            if fd == outbound.fd, let limit = awaitingReply, let next = readReply(limit) { perform(next) }
        case .relaying:
            pumpRelay()
        case .closed:
            break
        }
    }
}
