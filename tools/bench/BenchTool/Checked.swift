import ArgumentParser
import DataPlane
import Foundation
import Glibc
import TestSupport

/// The origin of checked transfers (TestSupport's HashServer: SHA-256 of every upload back to
/// the client, a pattern download the client checks), for the load and soak tests.
struct HashOrigin: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hash-server", abstract: "Serve checked transfers (the load and soak tests' origin).")
    @Option(help: "ADDR:PORT to listen on.") var listen: String

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        _ = try HashServer(namespace: nil, address: try SocketAddress(parsing: listen))
        while true { pause() }
    }
}

/// Sizes spread evenly on a log scale: as many 1-16 KB transfers as 1-16 MB ones, which is
/// what a mix of API calls, pages and downloads looks like.
struct LogUniformSizes {
    var random: SystemRandomNumberGenerator
    let low: Double
    let high: Double

    init(min: Int, max: Int) {
        random = SystemRandomNumberGenerator()
        low = log(Double(Swift.max(1, min)))
        high = log(Double(Swift.max(min, max)))
    }

    mutating func next() -> Int { Int(exp(Double.random(in: low...high, using: &random))) }
}

/// The load test's client: COUNT checked transfers at once (each uploads, half-closes, and
/// checks the origin's digest and its own download), then one line of figures. With --size
/// every transfer has that size both ways and Jain's fairness index of their rates is printed.
struct Many: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run COUNT concurrent checked transfers (the load test).")
    @Option(help: "ADDR:PORT to connect to.") var to: String
    @Option(help: "Transfers at once.") var count: Int = 1000
    @Option(help: "Smallest transfer, bytes each way.") var min: Int = 1024
    @Option(help: "Largest transfer, bytes each way.") var max: Int = 16 << 20
    @Option(help: "Every transfer this many bytes each way (fairness).") var size: Int?

    func validate() throws {
        guard count > 0, count <= 5000 else { throw ValidationError("--count is 1...5000") }
        guard min > 0, max >= min else { throw ValidationError("--min must be positive and at most --max") }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        var sizes = LogUniformSizes(min: min, max: max)
        let plan = (0..<count).map { _ in (size ?? sizes.next(), size ?? sizes.next()) }
        let lock = NSLock()
        var results: [TransferResult] = []
        var failures: [String] = []
        let started = Date()
        let workers = plan.enumerated().map { index, sizes in
            OSThread(name: "many") {
                do {
                    let result = try HashServer.transfer(to: target, upload: sizes.0, download: sizes.1, seed: UInt64(index) &* 7919 &+ 1, timeoutSeconds: 120)
                    lock.lock(); results.append(result); lock.unlock()
                } catch {
                    lock.lock(); failures.append("transfer \(index) (\(sizes.0) up, \(sizes.1) down): \(error)"); lock.unlock()
                }
            }
        }
        workers.forEach { $0.join() }
        let elapsed = Date().timeIntervalSince(started)
        for failure in failures.prefix(10) { FileHandle.standardError.write(Data("many: \(failure)\n".utf8)) }
        let bytes = results.reduce(0) { $0 + $1.uploaded + $1.downloaded }
        // Each transfer's rate over its whole life; Jain's index (Σx)² / (n·Σx²) is 1 when all are equal.
        let rates = results.map { Double($0.uploaded + $0.downloaded) / Swift.max($0.uploadSeconds + $0.downloadSeconds, 1e-6) }
        let sum = rates.reduce(0, +), squares = rates.reduce(0) { $0 + $1 * $1 }
        let jain = squares > 0 ? sum * sum / (Double(rates.count) * squares) : 0
        // completed failed bytes seconds jain
        print(results.count, "completed", failures.count, "failed", bytes, "bytes", String(format: "%.2f", elapsed), "s",
              String(format: "%.3f", jain), "jain")
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// The soak test's client: WORKERS threads open connection after connection for SECONDS,
/// each a checked transfer of random size, except that some are reset by the client mid-way
/// (SO_LINGER 0) and some ask the origin to reset them. Prints every 10 s and at the end:
/// checked transfers, expected resets, and unexpected failures (which fail the run).
struct Churn: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connection churn with resets for SECONDS (the soak test).")
    @Option(help: "ADDR:PORT to connect to.") var to: String
    @Option(help: "Seconds to run.") var seconds: Double = 600
    @Option(help: "Concurrent workers.") var workers: Int = 16
    @Option(help: "Largest transfer, bytes each way.") var max: Int = 1 << 20
    @Option(help: "Share of connections the client resets, percent.") var clientResets: Int = 5
    @Option(help: "Share of connections the origin is asked to reset, percent.") var originResets: Int = 5

    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var checked = 0, bytes = 0, clientResets = 0, originResets = 0
        var unexpected: [String] = []
        func add(_ body: (Tally) -> Void) { lock.lock(); body(self); lock.unlock() }
        var line: String {
            lock.lock(); defer { lock.unlock() }
            return "\(checked) checked \(bytes) bytes \(clientResets) client-resets \(originResets) origin-resets \(unexpected.count) unexpected"
        }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let target = try SocketAddress(parsing: to)
        let tally = Tally()
        let started = Date()
        let deadline = started.addingTimeInterval(seconds)
        let (maxSize, clientShare, originShare) = (max, clientResets, originResets)
        let threads = (0..<workers).map { worker in
            OSThread(name: "churn") {
                var sizes = LogUniformSizes(min: 1, max: maxSize)
                var serial: UInt64 = 0
                while Date() < deadline {
                    serial += 1
                    let seed = UInt64(worker) << 40 | serial
                    let roll = Int.random(in: 0..<100)
                    if roll < clientShare {
                        resetByClient(target, upload: sizes.next())
                        tally.add { $0.clientResets += 1 }
                    } else if roll < clientShare + originShare {
                        do {
                            _ = try HashServer.transfer(to: target, upload: 1 << 20, download: HashServer.resetRequest | 1, seed: seed, timeoutSeconds: 30)
                            tally.add { $0.unexpected.append("transfer \(seed): the origin was asked to reset it, yet it completed") }
                        } catch {
                            tally.add { $0.originResets += 1 }
                        }
                    } else {
                        let (up, down) = (sizes.next(), sizes.next())
                        do {
                            _ = try HashServer.transfer(to: target, upload: up, download: down, seed: seed, timeoutSeconds: 30)
                            tally.add { $0.checked += 1; $0.bytes += up + down }
                        } catch {
                            // When, to set beside the flaps and the proxies' log lines.
                            let at = Date()
                            tally.add { $0.unexpected.append("transfer \(seed) (\(up) up, \(down) down), failed \(String(format: "%.3f", at.timeIntervalSince(started))) s into the churn (\(at)): \(error)") }
                        }
                    }
                    usleep(UInt32.random(in: 0...4000))
                }
            }
        }
        let reporter = OSThread(name: "report") {
            while Date() < deadline {
                sleep(10)
                print("churn:", tally.line)
                fflush(stdout)
            }
        }
        threads.forEach { $0.join() }
        reporter.join()
        for failure in tally.unexpected.prefix(10) { FileHandle.standardError.write(Data("churn: \(failure)\n".utf8)) }
        print("churn total:", tally.line)
        if !tally.unexpected.isEmpty { throw ExitCode(1) }
    }

    /// Connects, sends the header and part of an upload, then resets (SO_LINGER 0).
    private func resetByClient(_ target: SocketAddress, upload: Int) {
        guard let fd = try? BlockingSocket.connect(to: target, timeoutSeconds: 30, from: nil) else { return }
        var header = [UInt8](repeating: 0, count: 16)
        header[7] = 1
        _ = header.withUnsafeBytes { send(fd, $0.baseAddress, 16, Int32(MSG_NOSIGNAL)) }
        var stream = PatternStream(seed: 1)
        try? stream.write(count: Swift.max(1, upload / 2), to: fd)
        var hard = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }
}
