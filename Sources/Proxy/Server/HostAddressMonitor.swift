import DataPlane
import Logging
import MPTCPKernel

/// Keeps `HostAddresses` equal to the addresses of the namespace the server runs in: dumps them
/// once, then re-dumps on every rtnetlink address change (event-driven, on the loop it was made
/// on; a lost message — ENOBUFS — just means a re-dump). Create it on that loop's thread: the
/// netlink sockets belong to the namespace of the thread that opens them.
final class HostAddressMonitor: EventHandler {
    private let loop: EventLoop
    private let addresses: HostAddresses
    private let logger: Logger
    private let monitor: RouteClient
    private let dumper: RouteClient

    init(loop: EventLoop, addresses: HostAddresses, logger: Logger) throws {
        self.loop = loop
        self.addresses = addresses
        self.logger = logger
        // Subscribe before dumping, so no change between the two is lost.
        monitor = try RouteClient(monitor: true)
        dumper = try RouteClient()
        try loop.register(monitor.fd, events: EventLoop.readEvents, handler: self)
        refresh()
    }

    private func refresh() {
        do {
            addresses.replace(Set(try dumper.addresses().filter { !$0.deleted }.map(\.address)))
        } catch {
            logger.error("cannot read this host's addresses: \(error); destinations equal to them are not refused until they can be read")
        }
    }

    func handleEvents(_ events: UInt32, fd: Int32) {
        let changed: Bool
        do {
            changed = try monitor.pending().contains { if case .address = $0 { return true }; return false }
        } catch {
            changed = true  // messages were lost: read everything again
        }
        if changed { refresh() }
    }

    func stop() {
        loop.execute { [self] in loop.deregister(monitor.fd) }
    }
}
