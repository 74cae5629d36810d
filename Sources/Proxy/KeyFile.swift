import ConvertProtocol
import Glibc

/// Pre-shared client keys. One key per line: `ID HEX`, where ID is 1-64 characters of
/// [A-Za-z0-9._-] and HEX is at least 16 bytes (32 hex digits; 32 bytes recommended,
/// e.g. `openssl rand -hex 32`). `#` starts a comment. A server's key file lists every
/// client; a client's key file holds its own single key.
public enum KeyFile {
    public static func parse(_ text: String, file: String) throws(ConfigError) -> [ClientKey] {
        var keys: [ClientKey] = []
        var seen: [String: Int] = [:]
        for (lineNumber, fields) in text.fieldLines {
            guard fields.count == 2 else {
                throw ConfigError(file: file, line: lineNumber, "expected `ID HEXKEY`, found \(fields.count) fields")
            }
            let id = String(fields[0])
            guard id.utf8.count <= ConvertCookie.maximumKeyIDLength,
                  id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ($0 == "." || $0 == "_" || $0 == "-")) }) else {
                throw ConfigError(file: file, line: lineNumber, key: id, "key id must be 1-64 characters of A-Z a-z 0-9 . _ -")
            }
            guard let secret = decodeHex(fields[1]) else {
                throw ConfigError(file: file, line: lineNumber, key: id, "key is not an even number of hex digits")
            }
            guard secret.count >= 16 else {
                throw ConfigError(file: file, line: lineNumber, key: id, "key is \(secret.count) bytes, at least 16 are required (32 recommended)")
            }
            if let first = seen[id] {
                throw ConfigError(file: file, line: lineNumber, key: id, "duplicate key id (first on line \(first))")
            }
            seen[id] = lineNumber
            keys.append(ClientKey(id: id, secret: secret))
        }
        return keys
    }

    /// A warning when others than the file's owner may read it (the keys are secrets), else nil.
    public static func permissionWarning(path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 != 0 else { return nil }
        return "key file \(path) is readable by others than its owner (mode \(String(mode, radix: 8))): chmod 600 \(path)"
    }

    /// Reads a server's key file (one or more keys).
    public static func load(path: String) throws(ConfigError) -> [ClientKey] {
        let keys = try parse(try readTextFile(path), file: path)
        guard !keys.isEmpty else { throw ConfigError(file: path, "no keys in file") }
        return keys
    }

    /// Reads a client's key file: exactly one key.
    public static func loadSingle(path: String) throws(ConfigError) -> ClientKey {
        let keys = try load(path: path)
        guard keys.count == 1 else {
            throw ConfigError(file: path, "a client key file holds exactly one key, found \(keys.count)")
        }
        return keys[0]
    }

    static func decodeHex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = hexValue(digits[index]), let low = hexValue(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Reads a whole text file, with errors that name it.
extension String {
    /// The lines of a two-column secrets file (keys, proxy users) with their numbers: `#` starts
    /// a comment, fields are split on blanks, lines with no field are left out.
    var fieldLines: [(line: Int, fields: [Substring])] {
        textLines.enumerated().compactMap { index, rawLine in
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            return fields.isEmpty ? nil : (index + 1, fields)
        }
    }
}

public func readTextFile(_ path: String) throws(ConfigError) -> String {
    guard let file = fopen(path, "r") else {
        throw ConfigError(file: path, "cannot open: \(String(cString: strerror(errno)))")
    }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
        if bytes.count > 16 << 20 { throw ConfigError(file: path, "file is larger than 16 MiB") }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw ConfigError(file: path, "file is not UTF-8 text")
    }
    return text
}
