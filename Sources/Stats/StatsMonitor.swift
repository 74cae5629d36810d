import DataPlane
import Glibc
import MPTCPKernel
import PathManager

public struct MonitorOptions: Sendable {
    /// Seconds between samples.
    public var interval: Double
    /// Shown in the title (for example "netns gw").
    public var scope: String
    public var color: Bool
    /// A proxy's metrics URL, to label connections with their proxied destination.
    public var proxyURL: String?
    public var classifier: InterfaceClassifier
    public var initialState: ViewState

    public init(interval: Double = 1, scope: String = "", color: Bool = false, proxyURL: String? = nil,
                classifier: InterfaceClassifier = InterfaceClassifier(), initialState: ViewState = ViewState()) {
        self.interval = interval
        self.scope = scope
        self.color = color
        self.proxyURL = proxyURL
        self.classifier = classifier
        self.initialState = initialState
    }
}

/// The monitor: samples the kernel every interval, keeps the recent path-manager events, and
/// either draws the interactive screen or hands snapshots to a printer (`--once`, `--json`).
/// Runs on the calling thread, which must already be in the namespace to watch.
public final class StatsMonitor {
    private let sampler: KernelSampler
    private var tracker: RateTracker
    private var events: [EventLine] = []
    private var interfaces: [InterfaceInfo] = []
    private var proxyNote: String?
    public let options: MonitorOptions

    public init(options: MonitorOptions) throws(NetlinkError) {
        self.options = options
        sampler = try KernelSampler()
        tracker = RateTracker(classifier: options.classifier)
    }

    /// Samples now; rates cover the time since the previous call (nil on the first).
    public func next() throws -> StatsSnapshot {
        collectEvents()
        let sample = try sampler.sample()
        interfaces = sample.interfaces
        var labels: [String: String] = [:]
        if let url = options.proxyURL {
            do {
                labels = ProxyLabels.parse(try MetricsFetcher.get(url))
                proxyNote = nil
            } catch {
                proxyNote = "proxy labels unavailable: \(error)"
            }
        }
        return tracker.update(sample, wallTime: wallClockSeconds(), events: events, eventsAvailable: sampler.eventFD != nil, labels: labels,
                              notes: sampler.notes + (proxyNote.map { [$0] } ?? []))
    }

    /// Two samples `interval` apart, so the rates are real.
    public func measure() throws -> StatsSnapshot {
        _ = try next()
        sleepSeconds(options.interval)
        return try next()
    }

    /// Snapshots every interval, `count` of them (nil: until stopped by a signal).
    public func stream(count: Int?, _ emit: (StatsSnapshot) -> Void) throws {
        installStopSignals()
        _ = try next()
        var emitted = 0
        while count.map({ emitted < $0 }) ?? true, stopSignal == 0 {
            sleepSeconds(options.interval)
            if stopSignal != 0 { break }
            emit(try next())
            emitted += 1
        }
    }

    /// The full-screen view until `q`, Ctrl-C or a termination signal.
    public func runInteractive() throws {
        guard let terminal = Terminal() else {
            throw MonitorError("the interactive view needs a terminal on stdin and stdout; use --once or --json")
        }
        installStopSignals()
        terminal.enter()
        defer { terminal.leave() }
        var state = options.initialState
        var snapshot = try next()
        var deadline = monotonicMicroseconds() + microseconds(options.interval)
        while stopSignal == 0 {
            let size = terminal.size()
            let renderer = ScreenRenderer(width: size.width, height: size.height, color: options.color, scope: options.scope)
            terminal.draw(renderer.screen(snapshot, state: state))

            let now = monotonicMicroseconds()
            let wait = deadline > now ? Int32(min((deadline - now) / 1000, 60_000)) : 0
            var fds = [pollfd(fd: 0, events: Int16(POLLIN), revents: 0)]
            if let eventFD = sampler.eventFD { fds.append(pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), wait)
            if fds[0].revents & Int16(POLLIN) != 0 {
                let visible = state.arrange(snapshot.connections).map(\.token)
                guard let keys = terminal.readKeys() else { return }  // end of input: the terminal is gone
                for key in keys {
                    switch state.handle(key, visible: visible) {
                    case .quit: return
                    case .resume: deadline = monotonicMicroseconds()
                    case .none, .redraw: break
                    }
                }
            } else if fds[0].revents & Int16(POLLHUP | POLLERR) != 0 {
                return  // the terminal went away (SSH dropped)
            }
            if fds.count > 1, fds[1].revents & Int16(POLLIN) != 0 {
                collectEvents()  // always drained, or poll would report it again at once
                if !state.paused { snapshot.events = events }
            }
            if monotonicMicroseconds() >= deadline {
                if !state.paused { snapshot = try next() }
                deadline = max(deadline + microseconds(options.interval), monotonicMicroseconds())
            }
        }
    }

    private func collectEvents() {
        events += sampler.pendingEvents(interfaces: interfaces)
        if events.count > 50 { events.removeFirst(events.count - 50) }
    }

    private func microseconds(_ seconds: Double) -> UInt64 { UInt64(max(seconds, 0.05) * 1e6) }

    private func sleepSeconds(_ seconds: Double) {
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR && stopSignal == 0 { request = remaining }
    }
}

public struct MonitorError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Set by SIGINT, SIGTERM or SIGHUP: the loops end and the terminal is restored.
nonisolated(unsafe) private var stopSignal: sig_atomic_t = 0

private func installStopSignals() {
    for signal in [SIGINT, SIGTERM, SIGHUP, SIGWINCH] {
        var action = sigaction()
        // SIGWINCH only interrupts poll, so the screen is redrawn at the new size at once.
        if signal == SIGWINCH {
            action.__sigaction_handler.sa_handler = { _ in }
        } else {
            action.__sigaction_handler.sa_handler = { _ in stopSignal = 1 }
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0  // no SA_RESTART: poll and nanosleep return EINTR
        sigaction(signal, &action, nil)
    }
}
