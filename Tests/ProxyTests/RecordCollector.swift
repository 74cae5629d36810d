import Glibc
import Proxy
import Synchronization

/// Connection records gathered from loop threads. (Kept out of files with @Test: importing
/// Synchronization next to Swift Testing's macros trips the 6.3 compiler.)
final class RecordCollector: Sendable {
    private let records = Mutex<[ConnectionRecord]>([])
    func append(_ record: ConnectionRecord) { records.withLock { $0.append(record) } }
    var reasons: [CloseReason] { records.withLock { $0.map(\.reason) } }
    var all: [ConnectionRecord] { records.withLock { $0 } }

    /// Waits up to `milliseconds` for a record with `reason`: the record is logged just after
    /// the sockets close, so a peer can see the close a moment before the record exists.
    func waitFor(_ reason: CloseReason, milliseconds: Int = 2_000) -> Bool {
        for _ in 0..<(milliseconds / 10) {
            if reasons.contains(reason) { return true }
            usleep(10_000)
        }
        return reasons.contains(reason)
    }

    /// Waits (bounded) until at least `count` records are in.
    func wait(count: Int, milliseconds: Int = 5_000) -> [ConnectionRecord] {
        for _ in 0..<(milliseconds / 10) where all.count < count { usleep(10_000) }
        return all
    }
}

/// A value shared by test threads.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func update(_ body: (inout Value) -> Void) { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}
