import Glibc
import Logging
import Synchronization

/// A swift-log handler that never blocks the thread that logs: lines go into a bounded queue
/// and one writer thread writes them to standard error. When the writer falls behind (a slow
/// journal, a full pipe, a flood), new lines are counted instead of queued and the count is
/// written as soon as there is room ("N log lines dropped"). An event loop therefore never
/// waits on its log, whatever the peers make it say.
public struct NonBlockingLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let label: String
    private let sink: LogSink

    public init(label: String, level: Logger.Level, sink: LogSink = .standardError) {
        self.label = label
        self.logLevel = level
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        var all = metadata
        if let explicit { all.merge(explicit) { _, new in new } }
        let extra = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        sink.enqueue("\(LogSink.timestamp()) \(level) \(label): [\(source)]\(extra) \(message)\n")
    }
}

/// The queue and writer thread behind NonBlockingLogHandler (one per destination).
public final class LogSink: @unchecked Sendable {
    public static let standardError = LogSink(fd: 2, capacity: 4096)

    private let fd: Int32
    private let capacity: Int
    private var lines: [String] = []
    private var writing = false
    private var dropped = 0
    private var mutex = pthread_mutex_t()
    private var ready = pthread_cond_t()
    private var writer: OSThreadHandle?

    public init(fd: Int32, capacity: Int) {
        self.fd = fd
        self.capacity = capacity
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&ready, nil)
    }

    /// Lines dropped so far because the writer was behind.
    public var droppedLines: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return dropped
    }

    func enqueue(_ line: String) {
        pthread_mutex_lock(&mutex)
        if writer == nil { writer = OSThreadHandle { [self] in write() } }
        if lines.count < capacity {
            lines.append(line)
            pthread_cond_signal(&ready)
        } else {
            dropped += 1
        }
        pthread_mutex_unlock(&mutex)
    }

    /// Blocks until everything queued so far is written (at shutdown, and in tests).
    public func flush() {
        while true {
            pthread_mutex_lock(&mutex)
            let done = lines.isEmpty && !writing
            pthread_mutex_unlock(&mutex)
            if done { return }
            usleep(1_000)
        }
    }

    private func write() {
        var reportedDrops = 0
        while true {
            pthread_mutex_lock(&mutex)
            while lines.isEmpty { pthread_cond_wait(&ready, &mutex) }
            var batch = lines
            lines.removeAll(keepingCapacity: true)
            writing = true
            let drops = dropped
            pthread_mutex_unlock(&mutex)
            if drops > reportedDrops {
                batch.insert("\(Self.timestamp()) warning mptcp-proxy: [Logging] \(drops - reportedDrops) log lines dropped (the log was not written fast enough)\n", at: 0)
                reportedDrops = drops
            }
            let bytes = Array(batch.joined().utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                offset += n
            }
            pthread_mutex_lock(&mutex)
            writing = false
            pthread_mutex_unlock(&mutex)
        }
    }

    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(cString: buffer)
    }
}

/// A detached thread running one closure (the log writer lives as long as the process).
final class OSThreadHandle {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping () -> Void) {
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, argument)
        pthread_detach(thread)
    }
}
