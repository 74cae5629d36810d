import CLinuxShim
import ConvertProtocol
import DataPlane
import Glibc
import Logging
import MPTCPKernel

/// Carries out what a connection's frontend and upstream machines ask, then relays.
///
/// Every action names its socket; each socket has at most one outstanding read and one send
/// buffer. Reads are attempted at once and only wait for epoll when the socket is empty
/// (edge-triggered epoll reports a socket only when something new arrives). The machines take
/// turns: the frontend until it yields a destination, the upstream until it is connected or
/// has failed, then the frontend again for its reply. Everything the handshake needs lives in
/// a `Handshake` object that is released when relaying starts, so an idle relayed connection
/// holds only its sockets, its relay state and its record.
final class ConnectionDriver<F: Frontend, U: Upstream>: EventHandler, TrackedConnection {
    private let context: ConnectionContext
    private let inbound: OwnedSocket
    private var outbound: OwnedSocket?
    private var handshake: Handshake?
    private var relay: SpliceRelay?
    /// What the `ConnectionRecord` will say, as far as it is known before the end.
    private var facts: ConnectionFacts
    private let startedAt: UInt64
    private var lastActivity: UInt64 = 0
    private var relayScheduled = false
    /// Whether the MPTCP leg is an MPTCP socket (not plain TCP), learnt once at relay start.
    private var legIsMPTCP: Bool?
    /// Descriptors (inbound, dial attempts) whose peer hung up during the handshake.
    private var hungUpBeforeRelay: [Int32] = []
    private var starvedRetry: UInt64 = 0
    /// A client's early half-close waiting for the MPTCP joins (see HalfCloseHold).
    private var halfCloseHold = HalfCloseHold()
    private var sampledAtFirstEOF = false
    /// Whether epoll watches each socket for writability. Only while a write waits for room, a
    /// connect is in progress or a reply waits for the MPTCP key: see `watchWrites`.
    private var inboundWatchesWrites = false
    private var outboundWatchesWrites = false
    /// Whether each socket may hold bytes to read, as the handshake last learnt it: cleared only
    /// on proof (a read that would block or came back short: a stream socket's read stops only
    /// at an empty queue), set by any readable or hang-up event. A read that would only learn
    /// EAGAIN is not made, and the relay starts from what the handshake knows (SpliceDirection
    /// keeps the same rule from then on).
    private var inboundMayRead = true
    private var outboundMayRead = true
    private(set) var isClosed = false
    /// Held until the connection ends (its count against the limits, a pool member's count).
    private var leases: HeldLeases
    /// Every deadline of the connection, served by its one timer (see ConnectionDeadlines).
    private var deadlines = ConnectionDeadlines()
    /// Made at the first deadline (the handshake's, at launch).
    private var timer: LoopTimer?

    private var loop: EventLoop { context.loop }

    /// What only the handshake needs; dropped when relaying starts.
    private final class Handshake {
        var frontend: F
        var upstream: U
        var turn: Turn = .frontend
        var pendingRead: PendingRead?
        var inboundSend = SendBuffer()
        var outboundSend = SendBuffer()
        var lastPeek = 0
        var dial: DialState?
        /// After a client's dial: what starting again on another path needs (`pathsLost`).
        var redial: Redial?
        /// A send on the inbound socket waits for the client's MPTCP key (see `peerKeyReceived`).
        var awaitingPeerKey = false
        var resolving = false
        /// Held while handshaking only (the source's count of handshakes in progress).
        var leases: [ConnectionLease]
        /// A limit refused the connection at accept: the frontend's first step answers it.
        var refusal: ConvertProtocolError?
        /// Set when the connection ends after an error reply: it discards what the client still
        /// sends until its EOF (`discardUntilEOF`), then ends for this reason. Only a frontend
        /// asks for that, so only while handshaking.
        var drainingReason: CloseReason?

        init(frontend: F, upstream: U, leases: [ConnectionLease], refusal: ConvertProtocolError?) {
            self.frontend = frontend
            self.upstream = upstream
            self.leases = leases
            self.refusal = refusal
        }
    }

    /// - Parameters:
    ///   - peer: the accepted socket's peer (read once by whoever built the frontend).
    ///   - refusal: a limit refused the connection at accept; the frontend answers it.
    ///   - leases: held for the connection's whole life; `handshakeLeases` until it relays.
    init(context: ConnectionContext, inbound socket: Socket, peer: SocketAddress?, frontend: F, upstream: U,
         refusal: ConvertProtocolError? = nil, leases: [ConnectionLease] = [], handshakeLeases: [ConnectionLease] = []) {
        self.context = context
        self.inbound = OwnedSocket(socket)
        self.startedAt = context.loop.now
        self.facts = ConnectionFacts(peer: peer)
        self.handshake = Handshake(frontend: frontend, upstream: upstream, leases: handshakeLeases, refusal: refusal)
        self.leases = HeldLeases(leases)
    }

    /// Registers the accepted socket, arms the handshake deadline and starts the frontend; a
    /// connection that cannot be registered ends at once (logged).
    func launch() {
        do {
            try loop.register(inbound.fd, events: EventLoop.streamEventsWithoutWrite, handler: self)
        } catch {
            context.logger.warning("accepted connection could not be registered: \(error)")
            inbound.close(reset: true)
            return
        }
        context.table.add(self)
        context.metrics.handshakeStarted()
        guard let handshake else { return }
        setDeadline(.handshake, after: context.timeouts.handshake)
        if let refusal = handshake.refusal {
            handshake.refusal = nil
            run(.frontend(handshake.frontend.refused(refusal)))
        } else {
            run(.frontend(handshake.frontend.start()))
        }
    }

    // MARK: the machines' turns

    /// Carries out steps until one has to wait for the network.
    private func run(_ first: Next) {
        var next = first
        while !isClosed, let handshake {
            switch next {
            case .wait:
                return
            case .frontend(let step):
                handshake.turn = .frontend
                next = perform(step, handshake)
            case .upstream(let step):
                handshake.turn = .upstream
                next = perform(step, handshake)
            }
        }
    }

    private func perform(_ step: FrontendStep, _ h: Handshake) -> Next {
        switch step {
        case .read(let limit):
            return startRead(PendingRead(side: .inbound, limit: limit, kind: .exact, turn: .frontend), h)
        case .peek(let limit):
            return startRead(PendingRead(side: .inbound, limit: limit, kind: .peek, turn: .frontend), h)
        case .send(let bytes):
            return queueSend(bytes, on: .inbound, notify: .frontend, h)
        case .connect(let request):
            facts.target = request.destination
            facts.keyID = request.keyID
            return .upstream(h.upstream.start(request, wallMilliseconds: unixMilliseconds()))
        case .relay:
            startRelay()
            return .wait
        case .close(let reason, let style):
            finish(reason, style)
            return .wait
        }
    }

    private func perform(_ step: UpstreamStep, _ h: Handshake) -> Next {
        switch step {
        case .readAvailable(let side, let limit):
            return startRead(PendingRead(side: side, limit: limit, kind: .available, turn: .upstream), h)
        case .read(let side, let limit):
            return startRead(PendingRead(side: side, limit: limit, kind: .exact, turn: .upstream), h)
        case .send(let side, let bytes):
            return queueSend(bytes, on: side, notify: .upstream, h)
        case .dial(let plan):
            startDial(plan, h)
            return .wait
        case .resolve(let name, let port):
            return resolve(name, port: port, h)
        case .connected:
            return .frontend(h.frontend.upstreamConnected())
        case .failed(let failure):
            return .frontend(h.frontend.upstreamFailed(failure))
        }
    }

    /// Delivers an I/O result to the machine whose turn it is.
    private func deliver(_ turn: Turn, _ h: Handshake, received bytes: [UInt8]?, on side: Side) -> Next {
        switch turn {
        case .frontend:
            return .frontend(bytes.map { h.frontend.received($0) } ?? h.frontend.inboundClosed())
        case .upstream:
            return .upstream(bytes.map { h.upstream.received(side, $0) } ?? h.upstream.closed(side))
        }
    }

    // MARK: reads and sends

    private func socket(_ side: Side) -> OwnedSocket? {
        side == .inbound ? inbound : outbound
    }

    private func startRead(_ read: PendingRead, _ h: Handshake) -> Next {
        h.pendingRead = nil
        guard let socket = socket(read.side) else {
            return deliver(read.turn, h, received: nil, on: read.side)
        }
        if !(read.side == .inbound ? inboundMayRead : outboundMayRead) {
            // Known empty, and any arrival since would have been an event: no call to learn EAGAIN.
            if read.kind == .available { return deliver(read.turn, h, received: [], on: read.side) }
            h.pendingRead = read
            return .wait
        }
        // Into the loop's copy buffer (free outside a relay's pump), then only the bytes read are
        // copied out: a zero-filled array of the limit (16 KiB for "what is there") per read
        // cost more than the read. A peek must see all it asks for (it waits for more than it saw
        // last), and none asks for more than the buffer holds (HTTP's 8 KiB is the largest).
        assert(read.kind != .peek || read.limit <= loop.copyBuffer.count)
        let scratch = UnsafeMutableRawBufferPointer(rebasing: loop.copyBuffer[0..<min(max(1, read.limit), loop.copyBuffer.count)])
        let result: IOResult
        do {
            result = try socket.socket.read(into: scratch, peek: read.kind == .peek)
        } catch {
            failIO(error, on: read.side, h)
            return .wait
        }
        if read.kind != .peek {
            switch result {
            case .wouldBlock: setMayRead(read.side, false)
            case .processed(let count) where count > 0 && count < scratch.count: setMayRead(read.side, false)
            case .processed: break
            }
        }
        switch result {
        case .wouldBlock:
            if read.kind == .available { return deliver(read.turn, h, received: [], on: read.side) }
            h.pendingRead = read
            return .wait
        case .processed(0):
            return deliver(read.turn, h, received: nil, on: read.side)
        case .processed(let count):
            if read.kind == .peek {
                // Nothing new since the last look: wait for more bytes before asking again.
                guard count > h.lastPeek else {
                    h.pendingRead = read
                    return .wait
                }
                h.lastPeek = count
            }
            return deliver(read.turn, h, received: Array(UnsafeRawBufferPointer(rebasing: scratch[0..<count])), on: read.side)
        }
    }

    private func queueSend(_ bytes: [UInt8], on side: Side, notify: Turn, _ h: Handshake) -> Next {
        if side == .inbound {
            h.inboundSend.bytes += bytes
            h.inboundSend.notify = notify
        } else {
            h.outboundSend.bytes += bytes
            h.outboundSend.notify = notify
            h.redial?.lateData.append(bytes)
        }
        return flush(side, h)
    }

    /// Writes what the side's buffer holds; tells its machine once the buffer is empty.
    private func flush(_ side: Side, _ h: Handshake) -> Next {
        guard let socket = socket(side) else { return .wait }
        if side == .inbound, context.waitForMPTCPKeyBeforeSending, !h.inboundSend.isEmpty, !peerKeyReceived() {
            // The socket's next epoll event is the handshake completing (see peerKeyReceived), an
            // EPOLLOUT edge: watched for from now on.
            h.awaitingPeerKey = true
            watchWrites(.inbound)
            return .wait
        }
        if side == .inbound { h.awaitingPeerKey = false }
        var buffer = side == .inbound ? h.inboundSend : h.outboundSend
        defer { if side == .inbound { h.inboundSend = buffer } else { h.outboundSend = buffer } }
        while !buffer.isEmpty {
            let result: IOResult
            do {
                result = try socket.socket.send(buffer.bytes, from: buffer.offset)
            } catch where error.errno == EINPROGRESS {
                watchWrites(side)
                return .wait  // TCP Fast Open without a cookie: written once the connection is up
            } catch {
                failIO(error, on: side, h)
                return .wait
            }
            guard case .processed(let count) = result else {
                watchWrites(side)
                return .wait
            }
            buffer.offset += count
        }
        buffer.bytes = []
        buffer.offset = 0
        guard let turn = buffer.notify else { return .wait }
        buffer.notify = nil
        switch turn {
        case .frontend: return .frontend(h.frontend.sent())
        case .upstream: return .upstream(h.upstream.sent(side))
        }
    }

    /// A socket error during the handshake: the machine whose socket it was decides.
    private func failIO(_ error: SystemError, on side: Side, _ h: Handshake) {
        if side == .outbound, case .upstream = h.turn {
            // The upstream treats a broken outbound socket as closed (e.g. a server that refused).
            context.logger.debug("outbound: \(error)")
            run(.upstream(h.upstream.closed(.outbound)))
            return
        }
        finish(.ioError(error), .reset)
    }

    private func setMayRead(_ side: Side, _ value: Bool) {
        if side == .inbound { inboundMayRead = value } else { outboundMayRead = value }
    }

    // MARK: writability

    /// Has epoll report `side`'s socket writable from now on. Sockets are watched for EPOLLOUT
    /// only while something waits for room: an MPTCP socket wakes its waiters with EPOLLOUT on
    /// every ACK that frees send space, so watching one that has room costs a wakeup per
    /// acknowledged write. epoll checks readiness as the interest changes, so room that came
    /// between the would-block and this call is still reported.
    private func watchWrites(_ side: Side) { setWatchingWrites(side, true) }

    /// The opposite of `watchWrites`, for a connected dial that has nothing left to write.
    private func stopWatchingWrites(_ side: Side) { setWatchingWrites(side, false) }

    private func setWatchingWrites(_ side: Side, _ watching: Bool) {
        guard let socket = socket(side), socket.isOpen else { return }
        if (side == .inbound ? inboundWatchesWrites : outboundWatchesWrites) == watching { return }
        do {
            try loop.modify(socket.fd, events: watching ? EventLoop.streamEvents : EventLoop.streamEventsWithoutWrite)
        } catch {
            finish(.ioError(error), .reset)
            return
        }
        if side == .inbound { inboundWatchesWrites = watching } else { outboundWatchesWrites = watching }
    }

    // MARK: the MPTCP key (server, TCP Fast Open)

    /// Whether the MPTCP handshake of the inbound socket has finished (the client's key arrived
    /// with its third ACK). Measured on Linux 6.18: a reply written to a TCP-Fast-Open-accepted
    /// MPTCP socket before that sat in the send queue and was never transmitted. The key is
    /// usually there already when the reply is ready (the third ACK beats the connect to the
    /// destination); when it is not, the wait is event-driven: the kernel wakes the socket when
    /// the handshake completes, which edge-triggered epoll reports as a new EPOLLOUT edge, and
    /// the send is retried then (docs/decisions/0006, with the reproducer). One getsockopt:
    /// MPTCP_INFO fails on plain TCP sockets, which are established at accept.
    private func peerKeyReceived() -> Bool {
        guard let info = inbound.socket.mptcpInfo() else {
            legIsMPTCP = false
            return true
        }
        legIsMPTCP = true
        return info.remoteKeyReceived || info.fallback
    }

    // MARK: dialling

    private func startDial(_ plan: DialPlan, _ h: Handshake) {
        let dial = DialState(plan: plan)
        h.dial = dial
        setDeadline(.dialTimeout, after: plan.timeout)
        carryOut(dial.scheduler.begin(), dial, h)
    }

    /// Starts the attempts the scheduler asks for (an attempt that fails or connects at once is
    /// reported back straight away) until one has to wait, or the dial is over.
    private func carryOut(_ first: DialScheduler.Decision, _ dial: DialState, _ h: Handshake) {
        var decision = first
        while true {
            for index in decision.abandon {
                guard let socket = dial.remove(index)?.socket else { continue }
                loop.deregister(socket.fd)
                socket.close(reset: true)
            }
            if decision.armDelay { setDeadline(.dialAttempt, after: dial.plan.attemptDelay) }
            switch decision.outcome {
            case .success(let index)?:
                endDial(h, winner: index)
                return
            case .failure(let failure)?:
                endDial(h, winner: nil)
                run(.upstream(h.upstream.dialed(.failed(errno: failure.errno))))
                return
            case nil:
                break
            }
            guard let index = decision.start, let next = startAttempt(index, dial) else { return }
            decision = next
        }
    }

    /// Opens attempt `index`: nil while it waits for its connect, else what the scheduler makes
    /// of it having connected or failed at once.
    private func startAttempt(_ index: Int, _ dial: DialState) -> DialScheduler.Decision? {
        switch openAttempt(dial.plan, index) {
        case .success(let attempt):
            dial.attempts.append(OpenAttempt(index: index, socket: attempt.socket, isMPTCP: attempt.isMPTCP))
            return attempt.connected ? dial.scheduler.attemptSucceeded(index) : nil
        case .failure(let error):
            return dial.scheduler.attemptFailed(index, errno: error.errno)
        }
    }

    /// A connection to the server whose first subflow left from a path now out of use, with
    /// nothing back from the server yet, waits for an answer that would come back over that
    /// path, if at all: a connection opened as its uplink failed would hang until its
    /// handshake deadline (the soak's stalls). Two moments:
    /// - its SYN is unanswered (the dial is still on): the attempt is closed and opened again;
    /// - the subflow was up, but nothing came back before the path failed: no DATA_ACK, so the
    ///   kernel never counted the connection fully established and made no join, and there is
    ///   no other subflow to carry the request or the reply. The socket is replaced and the
    ///   request and every byte sent behind it go again.
    /// Either way the new one goes to the same server from `sources` (or where routing now
    /// sends it) with the same signed request. The server's replay cache refuses that copy if
    /// the first did arrive and was read after all, so a request is never acted on twice; the
    /// LAN host then gets a refusal at once instead of a reset seconds later. A connection with
    /// a subflow left on a path in use, or with a byte from the server, is left alone: moving
    /// its data is the kernel's. Bounded per connection: each restart needs a path to fail.
    func pathsLost(_ lost: Set<IPAddress>, sources: [IPAddress]) {
        guard !isClosed, let h = handshake, context.mptcpLeg == .outbound else { return }
        if let dial = h.dial {
            restartAttempts(dial, h, lost: lost, sources: sources)
        } else {
            restartUnanswered(h, lost: lost, sources: sources)
        }
    }

    private func restartAttempts(_ dial: DialState, _ h: Handshake, lost: Set<IPAddress>, sources: [IPAddress]) {
        let stranded = dial.attempts.compactMap { attempt -> (OpenAttempt, IPAddress)? in
            guard let local = attempt.socket.socket.localAddress()?.address, lost.contains(local) else { return nil }
            return (attempt, local)
        }
        for (attempt, from) in stranded {
            guard dial.restarts < Self.restartLimit else { return }
            dial.restarts += 1
            _ = dial.remove(attempt.index)
            forgetSocket(attempt.socket)
            dial.plan.sources = sources
            noteRestart(to: dial.plan.candidates[attempt.index], from: from, sources: sources, why: "its SYN left from")
            if let decision = startAttempt(attempt.index, dial) {
                carryOut(decision, dial, h)
                if h.dial !== dial { return }
            }
        }
    }

    private func restartUnanswered(_ h: Handshake, lost: Set<IPAddress>, sources: [IPAddress]) {
        guard var redial = h.redial, redial.restarts < Self.restartLimit, let old = outbound,
              let local = old.socket.localAddress(), lost.contains(local.address),
              let info = old.socket.mptcpInfo(), !info.fallback, info.bytesReceived == 0,
              (old.socket.mptcpSubflowLocalAddresses() ?? []).allSatisfy({ lost.contains($0) })
        else { return }
        redial.restarts += 1
        redial.plan.sources = sources
        h.redial = redial
        forgetSocket(old)
        noteRestart(to: redial.plan.candidates[redial.index], from: local.address, sources: sources,
                    why: "nothing came back, and it has no subflow but from")
        switch openAttempt(redial.plan, redial.index) {
        case .failure(let error):
            context.logger.debug("outbound: \(error)")
            run(.upstream(h.upstream.closed(.outbound)))
        case .success(let attempt):
            outbound = attempt.socket
            outboundWatchesWrites = true  // registered so for its connect
            outboundMayRead = false
            legIsMPTCP = attempt.isMPTCP
            // Everything sent so far, again, in order; whoever waited for the last of it (late
            // data) is told when this has gone.
            h.outboundSend.bytes = redial.plan.initialData + redial.lateData.joined()
            h.outboundSend.offset = 0
            run(flush(.outbound, h))
        }
    }

    /// A socket of this connection closed for good before relaying: its descriptor number may
    /// come back at once for the next socket, so nothing may remember it.
    private func forgetSocket(_ socket: OwnedSocket) {
        hungUpBeforeRelay.removeAll { $0 == socket.fd }
        loop.deregister(socket.fd)
        socket.close(reset: true)
    }

    private func noteRestart(to server: SocketAddress, from: IPAddress, sources: [IPAddress], why: String) {
        context.metrics.dialRestarted()
        context.logger.notice("connection \(facts.peer.map { "\($0)" } ?? "?"): connecting to \(server) again from \(sources.first.map { "\($0)" } ?? "where routing sends it"): \(why) \(from), a path now out of use")
    }

    /// Restarts of a connection to the server stranded on a failed path (`pathsLost`).
    private static var restartLimit: Int { 3 }

    /// Opens, configures and connects one attempt; `connected` when the kernel says so at once
    /// (or, with TCP_FASTOPEN_CONNECT, defers the handshake to the first write).
    private func openAttempt(_ plan: DialPlan, _ index: Int) -> Result<Attempt, SystemError> {
        let address = plan.candidates[index]
        let owned: OwnedSocket
        let isMPTCP: Bool
        do {
            let made = try Socket.makeStream(family: address.family, mptcp: plan.mptcp)
            owned = OwnedSocket(made.socket)
            isMPTCP = made.isMPTCP
        } catch {
            return .failure(error)
        }
        let socket = owned.socket
        do {
            try loop.register(socket.fd, events: EventLoop.streamEvents, handler: self)
        } catch {
            owned.close()
            return .failure(error)
        }
        socket.setNoDelay()
        if plan.receiveBuffer > 0 {
            // Measured on Linux 6.18: an MPTCP socket read only with splice(2) never grows its
            // receive buffer (autotuning runs in recvmsg), so its window stays small and
            // downloads crawled at 2-4 Mbit/s over 90 Mbit/s of paths. A fixed buffer (the
            // kernel doubles it, capped by net.core.rmem_max) restores the full rate.
            try? socket.setOption(level: SOL_SOCKET, name: SO_RCVBUF, plan.receiveBuffer, "SO_RCVBUF")
        }
        if plan.fastOpen {
            // Best effort: without TFO the request simply follows the handshake.
            try? socket.setOption(level: Int32(IPPROTO_TCP), name: MPX_TCP_FASTOPEN_CONNECT, 1, "TCP_FASTOPEN_CONNECT")
        }
        do {
            if let source = plan.sources.first(where: { $0.family == address.family }) { try socket.bindSource(source) }
            let connected = try socket.connect(to: address)
            return .success(Attempt(socket: owned, connected: connected, isMPTCP: isMPTCP))
        } catch {
            loop.deregister(socket.fd)
            owned.close()
            return .failure(error)
        }
    }

    private func dialDelayElapsed() {
        guard !isClosed, let h = handshake, let dial = h.dial else { return }
        carryOut(dial.scheduler.delayElapsed(), dial, h)
    }

    private func dialTimedOut() {
        guard !isClosed, let h = handshake, h.dial != nil else { return }
        endDial(h, winner: nil)
        run(.upstream(h.upstream.dialed(.failed(errno: ETIMEDOUT))))
    }

    /// An attempt's socket reported writable or an error: its connect has finished.
    private func attemptFinished(fd: Int32, events: UInt32, _ h: Handshake) {
        guard let dial = h.dial, let position = dial.attempts.firstIndex(where: { $0.socket.fd == fd }) else { return }
        let (index, socket) = (dial.attempts[position].index, dial.attempts[position].socket)
        guard events & (MPX_EPOLLOUT | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 else { return }
        // Writable without an error or hang-up is a finished connect: SO_ERROR would say 0.
        let error = events & (MPX_EPOLLERR | MPX_EPOLLHUP) == 0 ? 0 : socket.socket.pendingError()
        if error == 0 {
            // Connected with nothing to read yet: the first bytes will be an edge of their own.
            if events & (MPX_EPOLLIN | MPX_EPOLLRDHUP) == 0 { dial.attempts[position].connectedEmpty = true }
            carryOut(dial.scheduler.attemptSucceeded(index), dial, h)
        } else {
            loop.deregister(fd)
            socket.close()
            dial.attempts.remove(at: position)
            carryOut(dial.scheduler.attemptFailed(index, errno: error), dial, h)
        }
    }

    /// The dial is over: the winner becomes the outbound socket (its initial data queued), every
    /// other attempt is closed, the timers stop.
    private func endDial(_ h: Handshake, winner: Int?) {
        guard let dial = h.dial else { return }
        h.dial = nil
        deadlines.clear(.dialAttempt)
        deadlines.clear(.dialTimeout)
        for attempt in dial.attempts where attempt.index != winner {
            loop.deregister(attempt.socket.fd)
            attempt.socket.close()
        }
        guard let winner, let won = dial.attempt(winner) else { return }
        outbound = won.socket
        outboundWatchesWrites = true  // registered so for its connect
        outboundMayRead = !won.connectedEmpty
        if context.mptcpLeg == .outbound { legIsMPTCP = won.isMPTCP }
        let address = dial.plan.candidates[winner]
        if context.mptcpLeg == .outbound { h.redial = Redial(plan: dial.plan, index: winner, restarts: dial.restarts) }
        if !dial.plan.initialData.isEmpty {
            h.outboundSend.bytes += dial.plan.initialData
            _ = flush(.outbound, h)  // no one is notified: the upstream goes on at once
        }
        if isClosed { return }
        // The ACK of the request would wake an MPTCP socket still watched for EPOLLOUT, and so
        // would every later one; on TCP, an edge for bytes read at once comes back as a bare
        // EPOLLOUT: stop watching once nothing waits to be written.
        if h.outboundSend.isEmpty { stopWatchingWrites(.outbound) }
        run(.upstream(h.upstream.dialed(.connected(address))))
    }

    // MARK: names

    private func resolve(_ name: String, port: UInt16, _ h: Handshake) -> Next {
        guard let resolver = context.resolver else {
            return .upstream(h.upstream.resolved([], error: "this endpoint resolves no names"))
        }
        h.resolving = true
        let loop = self.loop
        resolver.resolve(name) { [weak self] addresses, error in
            loop.execute {
                guard let self, !self.isClosed, let h = self.handshake, h.resolving else { return }
                h.resolving = false
                self.run(.upstream(h.upstream.resolved(addresses, error: error)))
            }
        }
        return .wait
    }

    // MARK: deadlines

    private func setDeadline(_ kind: ConnectionDeadlines.Kind, after milliseconds: UInt64) {
        setDeadline(kind, at: loop.now + milliseconds)
    }

    private func setDeadline(_ kind: ConnectionDeadlines.Kind, at instant: UInt64) {
        deadlines[kind] = instant
        armTimer()
    }

    /// Arms the timer at the earliest deadline unless it is armed at or before it already. A
    /// deadline cleared or moved later leaves the timer early: it then fires, finds nothing
    /// due and re-arms (one spare wakeup), where re-arming at each change would leave a stale
    /// heap entry each time (the loop drops those only when it compacts).
    private func armTimer() {
        guard let earliest = deadlines.earliest else { return }
        if let timer, timer.isArmed, timer.deadline <= earliest { return }
        // Unowned, not weak: a weak reference gives the driver a side table (an allocation that
        // lives as long as the connection). The timer cannot fire once the driver is gone: the
        // table holds the driver until `finish`, which invalidates the timer (it drops this
        // closure, so a stale heap entry does not keep the driver's memory either).
        let timer = self.timer ?? LoopTimer { [unowned self] in timerFired() }
        self.timer = timer
        loop.arm(timer, at: earliest)
    }

    private func timerFired() {
        while !isClosed, let due = deadlines.takeDue(now: loop.now) {
            switch due {
            case .drain: finish(handshake?.drainingReason ?? .internalError("drain without a reason"), .reset)
            case .handshake: handshakeDeadlinePassed()
            case .dialTimeout: dialTimedOut()
            case .dialAttempt: dialDelayElapsed()
            case .repump: pumpRelay()
            case .idle: idleCheck()
            }
        }
        if !isClosed { armTimer() }
    }

    private func handshakeDeadlinePassed() {
        guard !isClosed, let h = handshake else { return }
        h.pendingRead = nil
        h.resolving = false
        if h.dial != nil { endDial(h, winner: nil) }
        run(.frontend(h.frontend.timedOut()))
    }

    // MARK: events

    func handleEvents(_ events: UInt32, fd: Int32) {
        loop.census.noteConnectionEvent()
        if handshake?.drainingReason != nil {
            if fd == inbound.fd { discardUntilEOF() }
            return
        }
        if relay != nil {
            relay?.noteEvents(events, fd: fd)
            pumpRelay()
            return
        }
        // A peer's FIN seen now must reach the relay: edge-triggered epoll will not say it again,
        // and the relay stops reading at a short read unless it knows EOF is pending.
        if events & (MPX_EPOLLRDHUP | MPX_EPOLLHUP | MPX_EPOLLERR) != 0, !hungUpBeforeRelay.contains(fd) {
            hungUpBeforeRelay.append(fd)
        }
        if events & (MPX_EPOLLIN | MPX_EPOLLRDHUP | MPX_EPOLLHUP | MPX_EPOLLERR) != 0 {
            if fd == inbound.fd { inboundMayRead = true } else if fd == outbound?.fd { outboundMayRead = true }
        }
        guard let h = handshake else { return }
        if fd != inbound.fd, fd != outbound?.fd {
            attemptFinished(fd: fd, events: events, h)
            return
        }
        let side: Side = fd == inbound.fd ? .inbound : .outbound
        let sendBuffer = side == .inbound ? h.inboundSend : h.outboundSend
        // A send waiting for the MPTCP key retries on any event of the inbound socket: the
        // handshake completing is one (EPOLLOUT), so is the client closing or resetting.
        if !sendBuffer.isEmpty, events & (MPX_EPOLLOUT | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 || (side == .inbound && h.awaitingPeerKey) {
            run(flush(side, h))
        }
        guard !isClosed, let h = handshake, let read = h.pendingRead, read.side == side else { return }
        if events & (MPX_EPOLLIN | MPX_EPOLLRDHUP | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 {
            run(startRead(read, h))
        }
    }

    // MARK: relay

    private func startRelay() {
        guard let outbound, relay == nil, !isClosed, let h = handshake else { return }
        guard h.inboundSend.isEmpty, h.outboundSend.isEmpty else {
            // The machines relay only after their last send was reported sent.
            finish(.ioError(SystemError("relay with bytes unsent", errno: EIO)), .reset)
            return
        }
        deadlines.clear(.handshake)
        leases.append(contentsOf: h.upstream.leases)
        facts.earlyBytesUp = UInt64(h.upstream.earlyBytesCarried)
        handshake = nil  // and with it the handshake's leases (the source's handshake count)
        if legIsMPTCP == nil {
            let leg = context.mptcpLeg == .inbound ? inbound : outbound
            legIsMPTCP = leg.socket.transportProtocol() == MPX_IPPROTO_MPTCP
        }
        let mptcp = legIsMPTCP ?? false
        relay = SpliceRelay(client: inbound.socket, server: outbound.socket,
                            clientIsMPTCP: mptcp && context.mptcpLeg == .inbound,
                            serverIsMPTCP: mptcp && context.mptcpLeg == .outbound,
                            copyIntoMPTCP: context.copyIntoMPTCP)
        // What the handshake learnt of each socket's queue carries over (a FIN seen is noted next).
        relay?.upstream.sourceReadable = inboundMayRead
        relay?.downstream.sourceReadable = outboundMayRead
        for fd in hungUpBeforeRelay where fd == inbound.fd || fd == outbound.fd {
            relay?.noteEvents(MPX_EPOLLRDHUP, fd: fd)
        }
        hungUpBeforeRelay = []
        // On the gateway, a LAN client's EOF that comes before the MPTCP joins are made would
        // keep the connection on one subflow for good (HalfCloseHold): hold it for a while.
        if context.role == .client, mptcp, context.mptcpLeg == .outbound,
           loop.now < startedAt + HalfCloseHold.longest {
            relay?.upstream.holdsEOF = true
        }
        lastActivity = loop.now
        setDeadline(.idle, after: context.timeouts.idle)
        var live: ProxyMetrics.LiveConnection?
        if context.metrics.isExporting, let leg = socket(context.mptcpLeg)?.socket,
           let local = leg.localAddress(), let remote = leg.peerAddress() {
            live = ProxyMetrics.LiveConnection(peer: facts.peer.map { "\($0)" } ?? "?", destination: facts.destination,
                                               keyID: facts.keyID, mptcpLocal: "\(local)", mptcpRemote: "\(remote)")
        }
        context.metrics.relayStarted(ObjectIdentifier(self), live)
        pumpRelay()
    }

    private func pumpRelay() {
        guard !isClosed, relay != nil else { return }
        do {
            // In place (relay!): a copy out and back of the relay's two directions cost 500
            // instructions a pump in B3's profile.
            let (progress, moved) = try relay!.pump(pipes: loop.pipes, copyBuffer: loop.copyBuffer)
            if moved { lastActivity = loop.now }
            // A destination that would not take more is woken by EPOLLOUT, so watch for it.
            if !relay!.upstream.destinationWritable && !relay!.upstream.finished { watchWrites(.outbound) }
            if !relay!.downstream.destinationWritable && !relay!.downstream.finished { watchWrites(.inbound) }
            if isClosed { return }
            if relay!.upstream.holdsEOF {
                if relay!.upstream.holdingEOF {
                    // Reviewed when first held and at each re-check, not at every pump between.
                    if deadlines[.repump] == 0 && !reviewHeldEOF() { return }
                } else if relay!.downstream.bytesDelivered > 0 {
                    // The far side answered before the client's EOF: that EOF ends an exchange
                    // (B3's request, response, close) rather than awaiting a reply; holding it
                    // would only make joins for a connection about to close.
                    relay!.upstream.holdsEOF = false
                }
            }
            if !sampledAtFirstEOF && (relay!.upstream.finished || relay!.downstream.finished) {
                // Subflows close with the connection, so count them while it is still whole.
                sampledAtFirstEOF = true
                sampleTransport()
            }
            switch progress {
            case .finished:
                finish(.completed, .graceful)
            case .yielded:
                // Let the loop serve other connections before going on; edge-triggered epoll
                // will not report this socket again, so schedule the continuation ourselves.
                if !relayScheduled {
                    relayScheduled = true
                    loop.execute { [self] in
                        relayScheduled = false
                        pumpRelay()
                    }
                }
            case .waiting:
                starvedRetry = 0
            case .starved:
                // No pipe could be had: the bytes wait in the socket (holding back the sender);
                // try again after a pause that grows to half a second, never give up.
                if starvedRetry == 0 { context.logger.warning("connection \(facts.peer.map { "\($0)" } ?? "?") -> \(facts.destination): no pipe available, relaying waits") }
                starvedRetry = min(max(starvedRetry * 2, 5), 500)
                pumpAgain(at: loop.now + starvedRetry)
            }
        } catch {
            finish(.ioError(error), .reset)
        }
    }

    /// Decides on an upstream EOF the relay holds: lets it go (pumping again, which sends it;
    /// false: that pump has done the rest) or sets the re-check (true: carry on).
    private func reviewHeldEOF() -> Bool {
        var joins: HalfCloseHold.Joins?
        // Done downstream: this EOF ends the connection, and no join matters any more.
        if !relay!.downstream.finished, let leg = socket(.outbound), let info = leg.socket.mptcpInfo(),
           !info.fallback, let subflows = leg.socket.mptcpSubflowHandshakes() {
            joins = .init(endpointsUsed: info.endpointsUsed, endpointsMax: info.endpointsMax,
                          subflowsMax: info.subflowsMax, subflows: subflows)
        }
        switch halfCloseHold.decide(now: loop.now, connectionStartedAt: startedAt, joins: joins) {
        case .forward:
            relay!.upstream.holdsEOF = false
            pumpRelay()
            return false
        case .hold(let until):
            pumpAgain(at: until)
            return true
        }
    }

    /// Sets the relay's next pump, unless one is due earlier: a starved retry and a held EOF's
    /// re-check share it.
    private func pumpAgain(at instant: UInt64) {
        if deadlines[.repump] == 0 || deadlines[.repump] > instant { setDeadline(.repump, at: instant) }
    }

    private func idleCheck() {
        guard !isClosed else { return }
        let quietFor = loop.now - lastActivity
        if quietFor >= context.timeouts.idle {
            finish(.idleTimeout, .reset)
        } else {
            setDeadline(.idle, at: lastActivity + context.timeouts.idle)
        }
    }

    // MARK: end

    /// Keeps the most subflows the kernel has reported for the MPTCP leg.
    private func sampleTransport() {
        guard let leg = socket(context.mptcpLeg), leg.isOpen else { return }
        let now = leg.socket.transportKind(isMPTCP: legIsMPTCP)
        if case .mptcp(let seen) = facts.transport, now.subflows <= seen { return }
        if facts.transport == .fallback && now == .tcp { return }
        facts.transport = now
    }

    func finish(_ reason: CloseReason, reset: Bool) {
        finish(reason, reset ? .reset : .graceful)
    }

    /// Ends the connection once: logs its record, closes both sockets as `style` says, returns
    /// its pipes. With `.drainInbound` the inbound socket is half-closed first and the end
    /// waits for the peer's EOF (at most a second).
    private func finish(_ reason: CloseReason, _ style: CloseStyle) {
        guard !isClosed else { return }
        if style == .drainInbound, let h = handshake, h.drainingReason == nil {
            h.drainingReason = reason
            if h.dial != nil { endDial(h, winner: nil) }
            deadlines.clear(.handshake)
            inbound.socket.shutdownWrite()
            if let outbound {
                loop.deregister(outbound.fd)
                outbound.close()
                self.outbound = nil
            }
            setDeadline(.drain, after: 1_000)
            discardUntilEOF()
            return
        }
        isClosed = true
        if let h = handshake {
            if h.dial != nil { endDial(h, winner: nil) }
            h.resolving = false
        }
        deadlines.clearAll()
        timer?.invalidate()  // and with it the timer's unowned reference to this driver
        handshake = nil
        let relayed = relay != nil
        // Sampled already at the first EOF, while the connection was whole: once is enough.
        if !sampledAtFirstEOF { sampleTransport() }
        var record = ConnectionRecord(role: context.role, peer: facts.peer)
        record.target = facts.target
        record.keyID = facts.keyID
        record.transport = facts.transport
        record.reason = reason
        record.durationMilliseconds = loop.now - startedAt
        record.bytesUp = facts.earlyBytesUp
        if let relay {
            record.bytesUp += relay.upstream.bytesDelivered
            record.bytesDown += relay.downstream.bytesDelivered
        }
        relay?.release(pipes: loop.pipes)
        relay = nil
        // close(2) removes the descriptor from epoll itself (it is never duplicated), so only
        // the loop's table is told, not the kernel: one system call less.
        for case let socket? in [inbound, outbound] where socket.isOpen {
            loop.forget(socket.fd)
            socket.close(reset: style == .reset)
        }
        outbound = nil
        context.table.remove(self)
        leases.removeAll()
        if reason == .infoAnswered {
            // A client's health check, every second or so per gateway: not a connection
            // record, or the log and the connection counters would be mostly checks.
            context.logger.debug("info exchange answered: \(record)")
            context.metrics.infoAnswered()
            return
        }
        logEnd(record)
        context.metrics.ended(ObjectIdentifier(self), record, relayed: relayed)
        context.onEnd?(record)
    }

    /// One line per connection end. Lines about connections that did not complete are bounded
    /// per source (a peer must not flood the log by being refused); internal errors are errors.
    private func logEnd(_ record: ConnectionRecord) {
        switch record.reason {
        case .completed:
            context.logger.info("connection end: \(record)")
        case .internalError:
            context.logger.error("connection end: \(record)")
        default:
            guard let limiter = context.rejectionLog else {
                context.logger.notice("connection end: \(record)")
                return
            }
            guard let earlier = limiter.admit(record.peer?.address, nowMilliseconds: loop.now) else { return }
            context.logger.notice("connection end: \(record)\(earlier > 0 ? " (\(earlier) similar lines from this source suppressed)" : "")")
        }
    }

    /// After an error reply: discard what the client still sends until its EOF.
    private func discardUntilEOF() {
        guard let reason = handshake?.drainingReason else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !isClosed {
            let result = try? inbound.socket.read(into: &buffer)
            switch result {
            case .wouldBlock?: return
            case .processed(0)?: finish(reason, .graceful)
            case .processed?: continue
            case nil: finish(reason, .reset)
            }
        }
    }
}

// The driver's own types, outside the generic class: a type nested in a generic class is
// generic itself, and its metadata is looked up at run time wherever it is used (callgrind, B3:
// about 3,000 instructions a connection on the client in metadata lookups, most from these).

/// Whose turn it is to receive I/O results.
private enum Turn { case frontend, upstream }

private enum ReadKind { case exact, available, peek }

private struct PendingRead {
    var side: Side
    var limit: Int
    var kind: ReadKind
    var turn: Turn
}

/// A client's dial that connected, kept while the handshake lasts: the plan (its request and
/// first bytes), the server it reached, and what was sent behind them.
private struct Redial {
    var plan: DialPlan
    var index: Int
    var lateData: [[UInt8]] = []
    var restarts: Int
}

/// Bytes waiting to go out on one socket, and who is told when they are out.
private struct SendBuffer {
    var bytes: [UInt8] = []
    var offset = 0
    var notify: Turn?
    var isEmpty: Bool { offset >= bytes.count }
}

/// An attempt of a dial whose socket is open.
private struct OpenAttempt {
    let index: Int
    let socket: OwnedSocket
    /// The kernel may refuse MPTCP and give TCP.
    let isMPTCP: Bool
    /// Its connect finished with an event that showed nothing to read.
    var connectedEmpty = false
}

/// The attempts of one dial (Happy Eyeballs) and their sockets (its deadlines are the driver's).
private final class DialState {
    var plan: DialPlan
    var scheduler: DialScheduler
    var restarts = 0
    /// At most one per candidate, usually one: an array, where a dictionary and two sets
    /// cost a hash table each per connection.
    var attempts: [OpenAttempt] = []

    init(plan: DialPlan) {
        self.plan = plan
        self.scheduler = DialScheduler(candidateCount: plan.candidates.count, exclusive: plan.exclusive)
    }

    func remove(_ index: Int) -> OpenAttempt? {
        guard let position = attempts.firstIndex(where: { $0.index == index }) else { return nil }
        return attempts.remove(at: position)
    }

    func attempt(_ index: Int) -> OpenAttempt? { attempts.first { $0.index == index } }
}

private enum Next {
    case frontend(FrontendStep)
    case upstream(UpstreamStep)
    case wait
}

private struct Attempt {
    var socket: OwnedSocket
    var connected: Bool
    var isMPTCP: Bool
}

/// What a connection's record will say, as far as the driver knows it before the end: its
/// reason, duration and byte counts are known only then, so the `ConnectionRecord` is made in
/// `finish` (holding one from the start was 48 bytes more of every idle connection, B5).
private struct ConnectionFacts {
    var peer: SocketAddress?
    var target: Destination?
    var keyID: String?
    /// LAN bytes the upstream carried during the handshake (the relay counts the rest).
    var earlyBytesUp: UInt64 = 0
    var transport: TransportKind = .tcp

    init(peer: SocketAddress?) { self.peer = peer }

    var destination: String { target?.description ?? "?" }
}
