import CLinuxShim
import DataPlane
import Glibc
import Logging

/// One kind of check: what to send once connected and how to judge what comes back.
public struct HealthProbe: Sendable {
    public enum Verdict: Sendable, Equatable { case needMore, passed, failed(String) }

    /// Bytes to send once connected (made fresh for every check: a signed request needs a new nonce).
    public var request: @Sendable () -> [UInt8]
    /// Judges everything received so far; called again as more arrives, and with `ended` at EOF.
    public var judge: @Sendable (_ received: [UInt8], _ ended: Bool) -> Verdict
    public var mptcp: Bool

    public init(mptcp: Bool = false, request: @escaping @Sendable () -> [UInt8], judge: @escaping @Sendable ([UInt8], Bool) -> Verdict) {
        self.mptcp = mptcp
        self.request = request
        self.judge = judge
    }

    /// A TCP connect, then `send` and `expect` if configured (HAProxy's tcp-check in short).
    public static func tcp(send: [UInt8], expect: [UInt8]) -> HealthProbe {
        HealthProbe(request: { send }, judge: { received, ended in
            if expect.isEmpty { return send.isEmpty || ended || !received.isEmpty ? .passed : .needMore }
            if received.count >= expect.count, (0...(received.count - expect.count)).contains(where: { Array(received[$0..<($0 + expect.count)]) == expect }) {
                return .passed
            }
            return ended ? .failed("reply did not contain the expected bytes") : .needMore
        })
    }
}

/// What is checked and who is told: `report(success, detail)` after every check.
public struct HealthTarget: Sendable {
    public var address: SocketAddress
    public var settings: HealthCheckSettings
    public var probe: HealthProbe
    public var report: @Sendable (_ success: Bool, _ detail: String) -> Void
    /// The local address a check starts from (nil: routing chooses); asked before every check.
    public var source: @Sendable () -> IPAddress?

    public init(address: SocketAddress, settings: HealthCheckSettings, probe: HealthProbe,
                source: @escaping @Sendable () -> IPAddress? = { nil },
                report: @escaping @Sendable (Bool, String) -> Void) {
        self.address = address
        self.settings = settings
        self.probe = probe
        self.source = source
        self.report = report
    }
}

/// Runs health checks on an event loop away from the data plane (the service's housekeeping
/// loop, inside its namespace): a timer per target fires every interval, each check is a
/// non-blocking connect with a deadline, so an idle checker sleeps in epoll between checks.
public final class HealthChecker: @unchecked Sendable {
    private let loop: EventLoop
    /// Touched only on `loop`.
    private var checks: [TargetCheck] = []

    public init(loop: EventLoop) {
        self.loop = loop
    }

    /// Replaces the targets (a reload): checks of the old set stop, the new ones start now.
    public func run(_ targets: [HealthTarget]) {
        loop.execute { [self] in
            checks.forEach { $0.stop() }
            checks = targets.map { TargetCheck(target: $0, loop: loop) }
            checks.forEach { $0.start() }
        }
    }

    /// These local addresses stopped being paths in use: a check in flight from one of them
    /// waits for an answer that would come back over the failed path, and its timeout would
    /// count against a target that is fine (two such, and a client's only server is "down",
    /// refusing every LAN connection until it has passed twice more). Such a check is dropped
    /// unreported and a new one starts at once, from the source its target now gives.
    public func pathsLost(_ lost: Set<IPAddress>) {
        loop.execute { [self] in
            checks.forEach { $0.pathsLost(lost) }
        }
    }

    /// Stops every check (on the loop; the loop itself belongs to the caller).
    public func stop() {
        loop.execute { [self] in
            checks.forEach { $0.stop() }
            checks = []
        }
    }
}

/// The periodic check of one target, on the checker's loop.
private final class TargetCheck: EventHandler {
    let target: HealthTarget
    let loop: EventLoop
    private var socket: OwnedSocket?
    private var received: [UInt8] = []
    private var connected = false
    private var stopped = false
    private lazy var interval = LoopTimer { [weak self] in self?.begin() }
    private lazy var deadline = LoopTimer { [weak self] in self?.conclude(false, "no answer within \(self?.target.settings.timeout ?? 0) ms") }

    init(target: HealthTarget, loop: EventLoop) {
        self.target = target
        self.loop = loop
    }

    func start() { begin() }

    func stop() {
        stopped = true
        interval.cancel()
        deadline.cancel()
        closeSocket()
    }

    private func begin() {
        guard !stopped else { return }
        loop.arm(interval, after: target.settings.interval)
        guard socket == nil else { return }  // the previous check is still out: its deadline decides
        received = []
        connected = false
        do {
            let (opened, _) = try Socket.makeStream(family: target.address.family, mptcp: target.probe.mptcp)
            let owned = OwnedSocket(opened)
            socket = owned
            try loop.register(opened.fd, events: EventLoop.streamEvents, handler: self)
            loop.arm(deadline, after: target.settings.timeout)
            if let source = target.source() { try opened.bindSource(source) }
            if try opened.connect(to: target.address) { established() }
        } catch {
            conclude(false, "\(error)")
        }
    }

    /// See `HealthChecker.pathsLost`.
    func pathsLost(_ lost: Set<IPAddress>) {
        guard !stopped, let socket, let local = socket.socket.localAddress(), lost.contains(local.address) else { return }
        deadline.cancel()
        closeSocket()
        begin()  // re-arms the interval from now
    }

    private func established() {
        guard let socket, !connected else { return }
        connected = true
        let request = target.probe.request()
        if !request.isEmpty {
            do {
                guard case .processed(let n) = try socket.socket.send(request, from: 0), n == request.count else {
                    return conclude(false, "the request did not fit the socket")
                }
            } catch {
                return conclude(false, "\(error)")
            }
        }
        judge(ended: false)
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        guard let socket, fd == socket.fd else { return }
        if !connected {
            guard events & (MPX_EPOLLOUT | MPX_EPOLLERR | MPX_EPOLLHUP) != 0 else { return }
            let error = socket.socket.pendingError()
            if error != 0 { return conclude(false, "connect: \(String(cString: strerror(error)))") }
            established()
            return
        }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while self.socket != nil {
            switch try? socket.socket.read(into: &buffer) {
            case .processed(0)?: return judge(ended: true)
            case .processed(let n)?:
                received += buffer[0..<n]
                if received.count > 65536 { return conclude(false, "reply larger than 64 KiB") }
                judge(ended: false)
            case .wouldBlock?: return
            case nil: return judge(ended: true)
            }
        }
    }

    private func judge(ended: Bool) {
        switch target.probe.judge(received, ended) {
        case .needMore: if ended { conclude(false, "closed before a verdict") }
        case .passed: conclude(true, "ok")
        case .failed(let why): conclude(false, why)
        }
    }

    private func conclude(_ success: Bool, _ detail: String) {
        deadline.cancel()
        closeSocket()
        target.report(success, detail)
    }

    private func closeSocket() {
        guard let socket else { return }
        loop.deregister(socket.fd)
        socket.close()
        self.socket = nil
    }
}
