import ConvertProtocol
import Fuzzing
import Glibc

// The coverage-guided target for the Convert decoder, the cookie and the authenticator
// (FuzzTargets.convert). tools/fuzz/run-convert builds it with -DFUZZING and coverage
// instrumentation and runs it under libFuzzer; built normally, it replays the files it is
// given (a crash file, or a corpus) and says whether every invariant held.
nonisolated(unsafe) var harness = ConvertFuzzHarness()

func fuzzOne(_ input: [UInt8]) {
    let violations = FuzzTargets.convert(input, harness: &harness)
    if !violations.isEmpty { fatalError("invariant broken: \(violations)") }
}

#if FUZZING
// A Swift executable has its own `main`, so libFuzzer's is never linked in; its driver is
// entered explicitly instead (LLVMFuzzerRunDriver, part of libFuzzer's public interface).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    fuzzOne(size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
    return 0
})
#else
var count = 0
for path in CommandLine.arguments.dropFirst() {
    guard let bytes = readWholeFile(path) else { print("cannot read \(path)"); exit(2) }
    fuzzOne(bytes)
    count += 1
}
print("replayed \(count) inputs, every invariant held")

func readWholeFile(_ path: String) -> [UInt8]? {
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
#endif
