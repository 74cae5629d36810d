import Proxy
import Synchronization

/// Connection records gathered from loop threads. (Kept out of files with @Test: importing
/// Synchronization next to Swift Testing's macros trips the 6.3 compiler.)
final class RecordCollector: Sendable {
    private let records = Mutex<[ConnectionRecord]>([])
    func append(_ record: ConnectionRecord) { records.withLock { $0.append(record) } }
    var reasons: [CloseReason] { records.withLock { $0.map(\.reason) } }
}
