import CLinuxShim
import Glibc

/// One direction of a relay: source socket → destination socket. EOF on the source is
/// forwarded as shutdown(SHUT_WR) on the destination once everything read has been written.
///
/// Two phases (docs/decisions/0007). A direction starts by *copying*: read(2) into the loop's
/// copy buffer and send(2) at once, which for the few hundred bytes most exchanges carry costs
/// two calls and no pipe, where a splice costs four calls and, from MPTCP (Linux 6.18 has no
/// splice_read for it, so splice falls back to copy_splice_read), a page allocated per call.
/// The first read that fills the copy buffer shows a stream: from then on the direction
/// *splices*, source → pipe → destination, never through user space, with a pipe borrowed
/// from the loop's pool only while bytes are in it.
///
/// A spliced MPTCP source is read in *sized* splices: copy_splice_read allocates pages for the
/// whole requested length before reading and frees what it did not fill, even when the read
/// finds nothing (a 1 MiB request: 256 pages). So the direction asks how much is queued
/// (FIONREAD; MPTCP counts a pending DATA_FIN as one byte, so EOF is still read) and splices
/// that, or makes no call when nothing is queued.
public struct SpliceDirection {
    public let source: Socket
    public let destination: Socket
    /// The source is an MPTCP socket: splice it in sized reads (see above).
    public let sizedReads: Bool
    /// Readiness as edge-triggered epoll last reported it: a direction reads its source only
    /// while it may hold data and writes its destination only while it may take more, so an
    /// event for one end does not cost a call on the other to learn EAGAIN. A flag is cleared
    /// only on proof, because a wrong "drained" is a stall (no new edge comes for bytes already
    /// queued): the destination when a send(2) to it is short or would block, or a splice to it
    /// would block; the source when read(2) returns less than asked or would block (a stream
    /// socket's read stops only at an empty queue, and whatever arrives after is a new edge),
    /// FIONREAD says nothing is queued, or a splice from it would block into an *empty* pipe. A
    /// short splice from a socket proves nothing: it is also cut short by the pipe running out
    /// of slots (one per buffer, however few bytes each holds), and EAGAIN into a non-empty
    /// pipe may be the pipe being full. `noteEvents` sets the flags on the next edge.
    public var sourceReadable = true
    public var destinationWritable = true
    /// The source reported a hang-up (EPOLLRDHUP/HUP/ERR): read on to its EOF even after a
    /// short read or FIONREAD saying 0. Set by `noteEvents`, also for hang-ups the owner saw
    /// before the relay existed.
    public var sourceHungUp = false
    public private(set) var bytesDelivered: UInt64 = 0
    public private(set) var sourceClosed = false
    public private(set) var finished = false
    /// Copying is over: a read filled the copy buffer. One-way: a direction that carried a
    /// stream once is likely to again, and switching back would cost a pipe round trip.
    public private(set) var splicing: Bool
    /// The last pump wanted a pipe and none could be had: the bytes wait in the source socket.
    public private(set) var starved = false
    /// Keep the source's EOF, once everything before it is written, instead of forwarding it:
    /// the owner decides when it may go (a client's early half-close waits for the MPTCP joins,
    /// Proxy's HalfCloseHold) and clears this. Ignored once the other direction is done, when
    /// the EOF ends the connection.
    public var holdsEOF = false
    private var pipe: Pipe?
    /// Bytes in the pipe.
    private var buffered = 0
    /// Copied bytes the destination did not take at once (rare: a full send buffer). Nothing
    /// more is read until they are written, so bytes keep their order and this stays bounded
    /// by the copy buffer's size.
    private var unsent: [UInt8] = []
    private var unsentOffset = 0

    /// - Parameters: `sizedReads`: the source is MPTCP. `copyFirst`: start by copying (see
    ///   above); false for a destination that is an MPTCP socket, which only ever gets spliced
    ///   bytes (docs/decisions/0007: send(2) into MPTCP mixed with splices corrupts streams on
    ///   Linux 6.18).
    public init(from source: Socket, to destination: Socket, sizedReads: Bool = false, copyFirst: Bool = true) {
        self.source = source
        self.destination = destination
        self.sizedReads = sizedReads
        self.splicing = !copyFirst
    }

    /// Bytes read from the source and not yet written to the destination.
    public var bytesInFlight: Int { buffered + unsent.count - unsentOffset }

    /// The source's EOF is read and everything before it written, and `holdsEOF` keeps it.
    public var holdingEOF: Bool { holdsEOF && sourceClosed && bytesInFlight == 0 && !finished }

    /// Takes an epoll event for `fd` into the readiness flags.
    public mutating func noteEvents(_ events: UInt32, fd: Int32) {
        if fd == source.fd {
            if events & (MPX_EPOLLIN | MPX_EPOLLRDHUP | MPX_EPOLLHUP | MPX_EPOLLERR) != 0 { sourceReadable = true }
            if events & (MPX_EPOLLRDHUP | MPX_EPOLLHUP | MPX_EPOLLERR) != 0 { sourceHungUp = true }
        }
        if fd == destination.fd, events & (MPX_EPOLLOUT | MPX_EPOLLHUP | MPX_EPOLLERR) != 0 {
            destinationWritable = true
        }
    }

    /// Moves bytes until both ends would block, the direction finishes, or `budget` rounds have
    /// moved something. Returns how many did. `copyBuffer`: the loop's, free for the duration
    /// of the call. `otherFinished`: the opposite direction is done, so this one's EOF ends
    /// the connection and the close that follows sends the FIN (no shutdown call needed).
    public mutating func pump(pipes: PipePool, copyBuffer: UnsafeMutableRawBufferPointer, budget: Int,
                              otherFinished: Bool = false) throws(SystemError) -> Int {
        var work = 0
        starved = false
        while !finished && work < budget {
            var moved = try writeHeld()
            if !sourceClosed && sourceReadable && unsentOffset == unsent.count {
                if splicing {
                    if try spliceIn(pipes: pipes) { moved = true }
                    if starved { break }
                } else if try copy(through: copyBuffer) {
                    moved = true
                }
            }
            if buffered == 0, let idle = pipe {
                pipes.give(back: idle)
                pipe = nil
            }
            if sourceClosed && bytesInFlight == 0 && (!holdsEOF || otherFinished) {
                if !otherFinished { destination.shutdownWrite() }
                finished = true
                moved = true
            }
            if !moved { break }
            work += 1
        }
        return work
    }

    /// Writes what is held (copied bytes left over, or the pipe's); whether anything went.
    private mutating func writeHeld() throws(SystemError) -> Bool {
        guard destinationWritable else { return false }
        if unsentOffset < unsent.count {
            let (fd, offset) = (destination.fd, unsentOffset)
            let result = try nonBlockingIO("send") {
                unsent.withUnsafeBytes { all in Glibc.send(fd, all.baseAddress! + offset, all.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            guard case .processed(let n) = result else {
                destinationWritable = false
                return false
            }
            unsentOffset += n
            bytesDelivered += UInt64(n)
            if unsentOffset == unsent.count {
                unsent = []
                unsentOffset = 0
            }
            return n > 0
        }
        guard let pipe, buffered > 0 else { return false }
        let offered = buffered
        switch try nonBlockingIO("splice(pipe→socket)", { mpx_splice(pipe.readFD, destination.fd, offered, MPX_SPLICE_F_MOVE | MPX_SPLICE_F_NONBLOCK) }) {
        case .processed(let n):
            buffered -= n
            bytesDelivered += UInt64(n)
            return n > 0
        case .wouldBlock:
            destinationWritable = false
            return false
        }
    }

    /// One copied read, written out at once; whether anything moved.
    private mutating func copy(through buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Bool {
        switch try source.read(into: buffer) {
        case .wouldBlock:
            sourceReadable = false
            return false
        case .processed(0):
            sourceClosed = true
            return true
        case .processed(let n):
            if n == buffer.count {
                splicing = true  // a stream: splice what follows
            } else if !sourceHungUp {
                // A short read(2) emptied the queue (see sourceReadable), unless a FIN epoll
                // already reported is still to be read: no new edge would come for it.
                sourceReadable = false
            }
            var sent = 0
            if destinationWritable {
                switch try destination.send(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) {
                case .processed(let m): sent = m
                case .wouldBlock: break
                }
                // A short send(2) filled the send buffer; the kernel flags it (SOCK_NOSPACE) and
                // reports EPOLLOUT once room is back.
                if sent < n { destinationWritable = false }
            }
            bytesDelivered += UInt64(sent)
            if sent < n {
                unsent = Array(UnsafeRawBufferPointer(rebasing: buffer[sent..<n]))
                unsentOffset = 0
            }
            return true
        }
    }

    /// One splice from the source into the pipe; whether anything moved. Sets `starved` when
    /// no pipe could be had.
    private mutating func spliceIn(pipes: PipePool) throws(SystemError) -> Bool {
        if pipe == nil {
            do {
                pipe = try pipes.take()
            } catch where PipePool.isShortage(error) {
                // Out of pipes (descriptors, memory, or the pool's cap): leave the bytes in the
                // socket, where they hold back the sender, and try again later.
                starved = true
                return false
            }
        }
        guard let pipe else { return false }
        var room = pipe.capacity - buffered
        if sizedReads && room > 0 {
            let queued = Int(mpx_bytes_queued(source.fd))
            if queued == 0 && !sourceHungUp {
                sourceReadable = false   // nothing queued: no call; the next arrival is an edge
                return false
            }
            // INT_MAX is MPTCP's "cannot say" (seen for data that came in a Fast Open SYN): the
            // pipe's room stands.
            if queued > 0 && queued < Int(Int32.max) { room = min(room, queued) }
        }
        guard room > 0 else { return false }
        switch try nonBlockingIO("splice(socket→pipe)", { mpx_splice(source.fd, pipe.writeFD, room, MPX_SPLICE_F_MOVE | MPX_SPLICE_F_NONBLOCK | MPX_SPLICE_F_MORE) }) {
        case .processed(0):
            sourceClosed = true
            return true
        case .processed(let n):
            buffered += n
            return true
        case .wouldBlock:
            if buffered == 0 { sourceReadable = false }
            return false
        }
    }

    /// Returns the pipe (if any) to the pool; one still holding bytes is closed instead.
    public mutating func release(pipes: PipePool) {
        guard let held = pipe else { return }
        if buffered == 0 { pipes.give(back: held) } else { pipes.discard(held) }
        pipe = nil
        buffered = 0
    }
}

/// Both directions of a proxied connection after its handshake.
public struct SpliceRelay {
    public var upstream: SpliceDirection    // client side → server side
    public var downstream: SpliceDirection  // server side → client side

    /// - Parameters: `clientIsMPTCP`/`serverIsMPTCP`: that socket is MPTCP (spliced in sized
    ///   reads). `copyIntoMPTCP`: a direction bound for an MPTCP socket may copy its first bytes
    ///   too; only where no connection was accepted with data in its SYN (docs/decisions/0007).
    public init(client: Socket, server: Socket, clientIsMPTCP: Bool = false, serverIsMPTCP: Bool = false, copyIntoMPTCP: Bool = false) {
        upstream = SpliceDirection(from: client, to: server, sizedReads: clientIsMPTCP, copyFirst: !serverIsMPTCP || copyIntoMPTCP)
        downstream = SpliceDirection(from: server, to: client, sizedReads: serverIsMPTCP, copyFirst: !clientIsMPTCP || copyIntoMPTCP)
    }

    /// Takes an epoll event into both directions' readiness.
    public mutating func noteEvents(_ events: UInt32, fd: Int32) {
        upstream.noteEvents(events, fd: fd)
        downstream.noteEvents(events, fd: fd)
    }

    public enum Progress: Equatable {
        /// Both sides would block; wait for the next event.
        case waiting
        /// A direction needs a pipe and none could be had: try again after a pause (no event
        /// will come: the bytes are already waiting).
        case starved
        /// The budget ran out with work left: run again soon, after other connections.
        case yielded
        /// Both directions delivered their EOF.
        case finished
    }

    /// Pumps both directions. `budget` bounds the rounds per call so one fast connection
    /// cannot starve the others on its loop.
    public mutating func pump(pipes: PipePool, copyBuffer: UnsafeMutableRawBufferPointer,
                              budget: Int = 64) throws(SystemError) -> (progress: Progress, moved: Bool) {
        let up = try upstream.pump(pipes: pipes, copyBuffer: copyBuffer, budget: budget, otherFinished: downstream.finished)
        let down = try downstream.pump(pipes: pipes, copyBuffer: copyBuffer, budget: budget, otherFinished: upstream.finished)
        if upstream.finished && downstream.finished { return (.finished, true) }
        let yielded = (up >= budget && !upstream.finished) || (down >= budget && !downstream.finished)
        if yielded { return (.yielded, true) }
        return (upstream.starved || downstream.starved ? .starved : .waiting, up + down > 0)
    }

    public mutating func release(pipes: PipePool) {
        upstream.release(pipes: pipes)
        downstream.release(pipes: pipes)
    }
}
