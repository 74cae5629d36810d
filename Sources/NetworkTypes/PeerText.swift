/// Text that came from a peer (key ids, host names, user names, request lines), made safe for
/// a log line: printable ASCII stays, everything else (control characters, newlines, escape
/// sequences, bytes of other scripts) is written as \xNN, quotes and backslashes are escaped,
/// and the result is cut at `limit` bytes. So a peer can neither forge a log line nor send a
/// terminal escape through the log, nor flood one line.
public enum PeerText {
    public static let defaultLimit = 96

    public static func escaped(_ text: String, limit: Int = defaultLimit) -> String {
        escaped(bytes: Array(text.utf8), limit: limit)
    }

    public static func escaped(bytes: some Collection<UInt8>, limit: Int = defaultLimit) -> String {
        var out = ""
        out.reserveCapacity(min(bytes.count, limit) + 8)
        var written = 0
        for byte in bytes {
            if written >= limit {
                out += "…"
                break
            }
            switch byte {
            case UInt8(ascii: "\\"): out += "\\\\"
            case UInt8(ascii: "\""): out += "\\\""
            case 0x20...0x7e: out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789abcdef".utf8)
                out += "\\x"
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 0xf)]))
            }
            written += 1
        }
        return out
    }
}
