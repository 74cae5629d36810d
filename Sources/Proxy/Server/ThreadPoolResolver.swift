import DataPlane
import Glibc
import Synchronization

/// Resolves host names with getaddrinfo(3) on a few threads of its own, so a slow or dead DNS
/// server never blocks an event loop. Chosen over getaddrinfo_a (which starts a thread per
/// lookup and signals completion awkwardly) and c-ares (another dependency that ignores
/// nsswitch, so /etc/hosts and the host's resolver configuration would not apply): see
/// docs/decisions/0005. The queue is bounded: when it is full a lookup fails at once
/// ("resolver busy") instead of waiting behind an attacker's slow names.
public final class ThreadPoolResolver: NameResolver, @unchecked Sendable {
    public static let shared = ThreadPoolResolver(threads: 4, queueLimit: 1024)

    private struct Job {
        var name: String
        var completion: @Sendable ([IPAddress], String?) -> Void
    }

    private var queue: [Job] = []
    private var mutex = pthread_mutex_t()
    private var ready = pthread_cond_t()
    private let queueLimit: Int
    private let threadCount: Int
    private var started = false

    public init(threads: Int, queueLimit: Int) {
        self.threadCount = max(1, threads)
        self.queueLimit = queueLimit
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&ready, nil)
    }

    public func resolve(_ name: String, completion: @escaping @Sendable ([IPAddress], String?) -> Void) {
        pthread_mutex_lock(&mutex)
        if !started {
            // Threads start with the first lookup: a proxy that never resolves never has them.
            started = true
            for index in 0..<threadCount { _ = OSThread(name: "resolver-\(index)") { [self] in work() } }
        }
        guard queue.count < queueLimit else {
            pthread_mutex_unlock(&mutex)
            completion([], "resolver busy (\(queueLimit) lookups queued)")
            return
        }
        queue.append(Job(name: name, completion: completion))
        pthread_cond_signal(&ready)
        pthread_mutex_unlock(&mutex)
    }

    private func work() {
        while true {
            pthread_mutex_lock(&mutex)
            while queue.isEmpty { pthread_cond_wait(&ready, &mutex) }
            let job = queue.removeFirst()
            pthread_mutex_unlock(&mutex)
            let (addresses, error) = Self.lookup(job.name)
            job.completion(addresses, error)
        }
    }

    /// getaddrinfo for TCP, both families, in the resolver's order (RFC 6724).
    static func lookup(_ name: String) -> ([IPAddress], String?) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &result)
        guard status == 0 else { return ([], String(cString: gai_strerror(status))) }
        defer { freeaddrinfo(result) }
        var addresses: [IPAddress] = []
        var cursor = result
        while let entry = cursor {
            if let sockaddr = entry.pointee.ai_addr {
                var storage = sockaddr_storage()
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: sockaddr, count: Int(entry.pointee.ai_addrlen))) }
                if let address = SocketAddress(storage: storage)?.address, !addresses.contains(address) { addresses.append(address) }
            }
            cursor = entry.pointee.ai_next
        }
        return (addresses, addresses.isEmpty ? "no addresses" : nil)
    }
}
