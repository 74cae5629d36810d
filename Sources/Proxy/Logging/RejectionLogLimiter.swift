import DataPlane
import Synchronization

/// Limits the log lines about refused and failed connections to `perMinute` per source, so a
/// peer cannot flood the log (and its disk) by being refused. Lines over the limit are counted;
/// the next line allowed for that source says how many were suppressed. Sources are tracked in
/// a bounded table (IPv6 per /64); when it is full, the oldest minute's entries go first.
public final class RejectionLogLimiter: Sendable {
    private struct Entry {
        var minute: UInt64
        var lines = 0
        var suppressed = 0
    }

    private let perMinute: Int
    private let capacity: Int
    private let table = Mutex<[IPAddress: Entry]>([:])
    private let suppressedTotal = Atomic<Int>(0)

    public init(perMinute: Int, capacity: Int = 8192) {
        self.perMinute = perMinute
        self.capacity = capacity
    }

    public var suppressed: Int { suppressedTotal.load(ordering: .relaxed) }

    /// nil: do not log this line. Otherwise log it, with this many earlier lines suppressed.
    public func admit(_ source: IPAddress?, nowMilliseconds: UInt64) -> Int? {
        guard let source else { return 0 }
        let key = AdmissionControl.sourceKey(source)
        let minute = nowMilliseconds / 60_000
        return table.withLock { table -> Int? in
            if table[key] == nil, table.count >= capacity {
                table = table.filter { $0.value.minute == minute }
                if table.count >= capacity { table.removeAll() }
            }
            var entry = table[key] ?? Entry(minute: minute)
            if entry.minute != minute {
                entry.minute = minute
                entry.lines = 0
            }
            defer { table[key] = entry }
            guard entry.lines < perMinute else {
                entry.suppressed += 1
                suppressedTotal.add(1, ordering: .relaxed)
                return nil
            }
            entry.lines += 1
            let earlier = entry.suppressed
            entry.suppressed = 0
            return earlier
        }
    }
}
