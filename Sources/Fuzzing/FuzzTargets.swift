import ConvertProtocol
import ProxyProtocols

/// The per-input entry points of the coverage-guided targets in tools/fuzz. Kept here, not in
/// the target executables, so the test suite replays the committed corpora through exactly
/// the code libFuzzer ran.
public enum FuzzTargets {
    /// The Convert decoder, cookie and authenticator. The first byte picks the mode: even, the
    /// rest is raw bytes off the wire; odd, the rest drives ConvertRequestGenerator, so coverage
    /// feedback steers which TLVs, lengths and timestamps are built, not only which bytes flip.
    /// Returns the invariants the input broke.
    public static func convert(_ input: [UInt8], harness: inout ConvertFuzzHarness) -> [String] {
        guard let mode = input.first else { return [] }
        let bytes: [UInt8]
        if mode & 1 == 0 {
            bytes = Array(input.dropFirst())
        } else {
            var choices = ByteChoices(Array(input.dropFirst()))
            bytes = ConvertRequestGenerator(key: harness.key, now: harness.now).make(&choices)
        }
        let violations = harness.run(bytes).violations
        return violations.isEmpty ? [] : ["input \(bytes): \(violations)"]
    }

    /// The SOCKS5 and HTTP CONNECT codecs. First byte: bit 0 picks the protocol, bit 1 raw bytes
    /// or the structure-aware generator driven by the rest.
    public static func proxyProtocols(_ input: [UInt8]) -> [String] {
        guard let mode = input.first else { return [] }
        let generator = ProxyRequestGenerator()
        var bytes = Array(input.dropFirst())
        if mode & 2 != 0 {
            var choices = ByteChoices(bytes)
            bytes = mode & 1 == 0 ? generator.socks5(&choices) : generator.httpConnect(&choices)
        }
        let violations = mode & 1 == 0 ? ProxyProtocolFuzzHarness.socks5(bytes) : ProxyProtocolFuzzHarness.httpConnect(bytes)
        return violations.isEmpty ? [] : ["input \(bytes): \(violations)"]
    }
}
