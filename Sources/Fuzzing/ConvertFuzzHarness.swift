import ConvertProtocol
import NetworkTypes

/// One input through everything the server does with a request before it dials: framing in
/// the sizes the reader asks for, decoding, request validation, authentication (key, freshness,
/// MAC, replay cache), and the reply it would send. Returns the invariants the input broke
/// (empty when all held); crashes and hangs are findings by themselves.
///
/// Invariants: the reader never asks for a negative or oversized read; a framed message is the
/// input's prefix of the announced length; anything decoded re-encodes to the same message; every
/// rejection has a code and a reason whose text is safe for a log (printable ASCII only, so a
/// peer cannot forge lines or send terminal escapes); every reply encodes, decodes and fits
/// 1020 bytes.
public struct ConvertFuzzHarness {
    public let key: ClientKey
    public let authenticator: ConvertAuthenticator
    public let now: UInt64
    private var monotonic: UInt64 = 1

    public init(key: ClientKey = ClientKey(id: "fuzz-key", secret: Array(repeating: 3, count: 32)), now: UInt64 = 1_800_000_000_000) {
        self.key = key
        self.now = now
        var settings = ConvertAuthenticator.Settings()
        settings.replayCapacity = 256
        settings.minimumShare = 64
        authenticator = ConvertAuthenticator(keys: [key], settings: settings, floor: now &- 120_000)
    }

    public enum Outcome: Equatable {
        case incomplete
        case accepted(ConvertRequest)
        case rejected(ConvertErrorCode)
    }

    public mutating func run(_ input: [UInt8]) -> (outcome: Outcome, violations: [String]) {
        var violations: [String] = []
        monotonic &+= 1  // a millisecond per input: entries age out over a run
        // Framing exactly as the server reads: never more than the reader asks for.
        var reader = ConvertFrameReader()
        var offset = 0
        var framed: [UInt8]?
        var framingError: ConvertProtocolError?
        while framed == nil && framingError == nil {
            let wanted = reader.bytesNeeded
            if wanted < 0 || wanted > ConvertWire.maximumMessageLength { violations.append("reader asked for \(wanted) bytes") }
            if wanted <= 0 || offset >= input.count { break }
            let chunk = input[offset..<min(input.count, offset + wanted)]
            offset += chunk.count
            do { framed = try reader.consume(Array(chunk)) } catch { framingError = error }
        }
        if let framed, Array(input.prefix(framed.count)) != framed {
            violations.append("framed message is not the input's prefix")
        }
        let outcome: Outcome
        var rejection: ConvertProtocolError?
        if let framingError {
            rejection = framingError
            outcome = .rejected(framingError.code)
        } else if let framed {
            do {
                let decoded = try ConvertMessage.decode(framed)
                let reencoded = try decoded.message.encoded()
                if try ConvertMessage.decode(reencoded).message != decoded.message { violations.append("re-encoding changed the message") }
                let request = try ConvertRequest(decoded.message)
                _ = try authenticator.authenticate(decoded, wallNow: now, monotonicNow: monotonic)
                outcome = .accepted(request)
            } catch {
                rejection = error
                outcome = .rejected(error.code)
            }
        } else {
            outcome = .incomplete
        }
        if let rejection {
            if rejection.reason.isEmpty { violations.append("rejection without a reason") }
            if !rejection.reason.unicodeScalars.allSatisfy({ ($0.value >= 0x20 && $0.value < 0x7f) || $0 == "…" || $0 == "±" }) {
                violations.append("reason is not safe for a log: \(PeerText.escaped(rejection.reason))")
            }
            do {
                let reply = try ConvertMessage.failure(for: rejection, received: reader.received).encoded()
                if reply.count > ConvertWire.maximumMessageLength { violations.append("reply of \(reply.count) bytes") }
                if try ConvertMessage.decode(reply).message.error?.0 != rejection.code { violations.append("reply lost its code") }
            } catch {
                violations.append("reply for \(rejection.code) does not encode: \(error)")
            }
        }
        return (outcome, violations)
    }
}
