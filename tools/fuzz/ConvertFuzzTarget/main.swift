import ConvertProtocol
import Fuzzing

// The coverage-guided target for the Convert decoder, the cookie and the authenticator
// (FuzzTargets.convert); tools/fuzz/run-convert runs it under libFuzzer (FuzzDriver).
nonisolated(unsafe) var harness = ConvertFuzzHarness()

FuzzDriver.run { FuzzTargets.convert($0, harness: &harness) }
