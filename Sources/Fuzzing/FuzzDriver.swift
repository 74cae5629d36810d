import Glibc

/// The entry of every coverage-guided target in tools/fuzz. Built with -DFUZZING (and coverage
/// instrumentation, tools/fuzz/lib.sh), it hands `fuzzOne` to libFuzzer; built normally, it
/// replays the files named on the command line (a crash file, or a corpus) and says whether
/// every invariant held. `fuzzOne` returns the invariants an input broke; any is fatal.
public enum FuzzDriver {
    public static func run(_ fuzzOne: @escaping ([UInt8]) -> [String]) -> Never {
        check = fuzzOne
        #if FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            FuzzDriver.one(size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
            return 0
        })
        #else
        var count = 0
        for path in CommandLine.arguments.dropFirst() {
            guard let bytes = readWholeFile(path) else {
                print("cannot read \(path)")
                exit(2)
            }
            one(bytes)
            count += 1
        }
        print("replayed \(count) inputs, every invariant held")
        exit(0)
        #endif
    }

    nonisolated(unsafe) private static var check: ([UInt8]) -> [String] = { _ in [] }

    private static func one(_ input: [UInt8]) {
        let violations = check(input)
        if !violations.isEmpty { fatalError("invariant broken: \(violations)") }
    }

    static func readWholeFile(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            bytes += buffer[0..<n]
            if n < buffer.count { return bytes }
        }
    }
}

#if FUZZING
// A Swift executable has its own `main`, so libFuzzer's is never linked in; its driver is
// entered explicitly instead (LLVMFuzzerRunDriver, part of libFuzzer's public interface).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif
