import CLinuxShim
import Glibc

/// One direction of a relay: source socket → pipe → destination socket, never through user
/// space. A pipe is borrowed from the loop's pool only while bytes are in it. EOF on the
/// source is forwarded as shutdown(SHUT_WR) on the destination once the pipe has drained.
public struct SpliceDirection {
    public let source: Socket
    public let destination: Socket
    public private(set) var bytesDelivered: UInt64 = 0
    public private(set) var sourceClosed = false
    public private(set) var finished = false
    /// The last pump wanted a pipe and none could be had: the bytes wait in the source socket.
    public private(set) var starved = false
    private var pipe: Pipe?
    private var buffered = 0

    public init(from source: Socket, to destination: Socket) {
        self.source = source
        self.destination = destination
    }

    public var bytesInFlight: Int { buffered }

    /// Moves bytes until both ends would block, the direction finishes, or `budget` splices
    /// have been done. Returns how many splices moved something.
    public mutating func pump(pipes: PipePool, budget: Int) throws(SystemError) -> Int {
        var work = 0
        let flags = MPX_SPLICE_F_MOVE | MPX_SPLICE_F_NONBLOCK
        starved = false
        while !finished && work < budget {
            var moved = false
            if let pipe, buffered > 0 {
                if case .processed(let n) = try nonBlockingIO("splice(pipe→socket)", { mpx_splice(pipe.readFD, destination.fd, buffered, flags) }), n > 0 {
                    buffered -= n
                    bytesDelivered += UInt64(n)
                    moved = true
                }
            }
            if !sourceClosed {
                if pipe == nil {
                    do {
                        pipe = try pipes.take()
                    } catch where PipePool.isShortage(error) {
                        // Out of pipes (descriptors, memory, or the pool's cap): leave the bytes
                        // in the socket, where they hold back the sender, and try again later.
                        starved = true
                        break
                    }
                }
                let room = pipe!.capacity - buffered
                if room > 0 {
                    switch try nonBlockingIO("splice(socket→pipe)", { mpx_splice(source.fd, pipe!.writeFD, room, flags | MPX_SPLICE_F_MORE) }) {
                    case .processed(0):
                        sourceClosed = true
                        moved = true
                    case .processed(let n):
                        buffered += n
                        moved = true
                    case .wouldBlock:
                        break
                    }
                }
            }
            if buffered == 0, let idle = pipe {
                pipes.give(back: idle)
                pipe = nil
            }
            if sourceClosed && buffered == 0 {
                destination.shutdownWrite()
                finished = true
                moved = true
            }
            if !moved { break }
            work += 1
        }
        return work
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

    public init(client: Socket, server: Socket) {
        upstream = SpliceDirection(from: client, to: server)
        downstream = SpliceDirection(from: server, to: client)
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

    /// Pumps both directions. `budget` bounds the splices per call so one fast connection
    /// cannot starve the others on its loop.
    public mutating func pump(pipes: PipePool, budget: Int = 64) throws(SystemError) -> (progress: Progress, moved: Bool) {
        let up = try upstream.pump(pipes: pipes, budget: budget)
        let down = try downstream.pump(pipes: pipes, budget: budget)
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
