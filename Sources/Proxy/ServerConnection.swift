import CLinuxShim
import ConvertProtocol
import DataPlane
import Glibc
import MPTCPKernel

/// One connection accepted by the server endpoint: read and check the Convert request,
/// connect to its destination, reply, then relay. Decisions are ServerHandshake's.
final class ServerConnection: ProxiedConnection {
    private var handshake: ServerHandshake
    private var awaitingRead: Int?
    /// The deadline of the current phase: connecting to the destination, or draining after an error reply.
    private var phaseTimer: LoopTimer?
    /// Set while the error reply is out and we wait for the client's EOF (see `drainThenClose`).
    private var drainingReason: CloseReason?

    init(context: ConnectionContext, inbound: Socket, authenticator: ConvertAuthenticator) {
        handshake = ServerHandshake(authenticator: authenticator)
        super.init(context: context, inbound: inbound, role: .server)
    }

    override var mptcpLeg: Socket? { inbound }

    override func begin() {
        perform(handshake.start())
    }

    private func perform(_ action: ServerHandshake.Action) {
        var next: ServerHandshake.Action? = action
        while let action = next, !isClosed {
            next = nil
            switch action {
            case .read(let limit):
                awaitingRead = limit
                next = readRequest()
            case .connect(let destination):
                awaitingRead = nil
                record.destination = "\(destination)"
                record.keyID = handshake.keyID
                next = dial(destination)
            case .send(let bytes):
                guard peerFullyEstablished() else {
                    deferReply(bytes)
                    return
                }
                do {
                    if try send(bytes, on: inbound) { next = handshake.replySent() }
                } catch {
                    finish(.ioError(error), reset: true)
                }
            case .startRelay:
                startRelay()
            case .close(let reason):
                if case .rejected(let error) = reason, error.code.rawValue < 96 {
                    // The request itself was refused: say which rule it broke.
                    context.logger.notice("rejected request from \(record.peer.map { "\($0)" } ?? "?"): \(error)")
                }
                if case .rejected = reason {
                    drainThenClose(reason)
                } else {
                    finish(reason, reset: true)
                }
            }
        }
    }

    /// Whether the MPTCP handshake has finished (the client's key arrived with its third ACK).
    /// Measured on Linux 6.18: a reply written to a TCP-Fast-Open-accepted MPTCP socket before
    /// that sat in the send queue and was never transmitted (the client waited out its
    /// handshake deadline). Writing only after the key has arrived avoids it; sockets accepted
    /// without TFO, and plain TCP ones, are established at accept already.
    private func peerFullyEstablished() -> Bool {
        guard inbound.transportProtocol() == MPX_IPPROTO_MPTCP, let info = inbound.mptcpInfo() else { return true }
        return info.remoteKeyReceived || info.fallback
    }

    private var replyRetryDelay: UInt64 = 1
    private var replyTimer: LoopTimer?

    /// Retries the reply shortly (the client's ACK is at most one round trip away); the
    /// handshake deadline still bounds the wait.
    private func deferReply(_ bytes: [UInt8]) {
        let timer = replyTimer ?? LoopTimer { [weak self] in
            guard let self, !isClosed, let pending = pendingReply else { return }
            pendingReply = nil
            perform(.send(pending))
        }
        replyTimer = timer
        pendingReply = bytes
        loop.arm(timer, after: replyRetryDelay)
        replyRetryDelay = min(replyRetryDelay * 2, 50)
    }

    private var pendingReply: [UInt8]?

    private func readRequest() -> ServerHandshake.Action? {
        guard let limit = awaitingRead else { return nil }
        do {
            switch try read(upTo: limit, from: inbound) {
            case .wouldBlock: return nil
            case .endOfStream: return handshake.peerClosed()
            case .bytes(let bytes): return handshake.received(bytes, now: unixMilliseconds())
            }
        } catch {
            finish(.ioError(error), reset: true)
            return nil
        }
    }

    private func dial(_ address: SocketAddress) -> ServerHandshake.Action? {
        do {
            let (socket, _) = try Socket.makeStream(family: address.family, mptcp: false)
            outbound = socket
            try loop.register(socket.fd, events: EventLoop.streamEvents, handler: self)
            socket.setNoDelay()
            if try socket.connect(to: address) { return handshake.connectFinished(errno: 0) }
            let timer = LoopTimer { [weak self] in
                guard let self, !isClosed, case .connecting = handshake.state else { return }
                perform(handshake.connectFinished(errno: ETIMEDOUT))
            }
            phaseTimer = timer
            loop.arm(timer, after: timeouts.connect)
            return nil
        } catch {
            return handshake.connectFinished(errno: error.errno)
        }
    }

    /// After an error reply: send FIN and discard what the client still sends until its EOF
    /// (at most one second). Closing at once with unread bytes would send a RST that can
    /// overtake the reply, and the client would never learn why it was refused.
    private func drainThenClose(_ reason: CloseReason) {
        drainingReason = reason
        inbound.shutdownWrite()
        if let outbound {
            loop.deregister(outbound.fd)
            outbound.close()
            self.outbound = nil
        }
        let timer = LoopTimer { [weak self] in self?.finish(reason, reset: true) }
        phaseTimer = timer
        loop.arm(timer, after: 1_000)
        discardUntilEOF()
    }

    private func discardUntilEOF() {
        guard let reason = drainingReason else { return }
        while !isClosed {
            do {
                switch try read(upTo: 65536, from: inbound) {
                case .wouldBlock: return
                case .endOfStream: finish(reason)
                case .bytes: continue
                }
            } catch {
                finish(reason, reset: true)
            }
        }
    }

    override func handshakeDeadlinePassed() {
        guard !isClosed else { return }
        perform(handshake.timedOut())
    }

    override func handleEvents(_ events: UInt32, fd: Int32) {
        if drainingReason != nil {
            if fd == inbound.fd { discardUntilEOF() }
            return
        }
        switch handshake.state {
        case .readingRequest:
            if fd == inbound.fd, let action = readRequest() { perform(action) }
        case .connecting:
            if let outbound, fd == outbound.fd, events & (MPX_EPOLLOUT | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 {
                phaseTimer?.cancel()
                perform(handshake.connectFinished(errno: outbound.pendingError()))
            }
        case .replyingSuccess, .replyingError:
            // Only a reply that is partly written is ours to flush here; a deferred one
            // (see `deferReply`) goes out from its timer.
            if fd == inbound.fd, hasPendingSend {
                do {
                    if try flushSend(on: inbound) { perform(handshake.replySent()) }
                } catch {
                    finish(.ioError(error), reset: true)
                }
            }
        case .relaying:
            pumpRelay()
        case .closed:
            break
        }
    }
}
