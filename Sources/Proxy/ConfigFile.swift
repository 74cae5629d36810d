import DataPlane

/// A small TOML subset for configuration files, parsed with line numbers so that every
/// error can name the file, line and key:
///
///     # comment
///     key = "string" | 123 | true | false | ["a", "b"] | [1, 2]
///     [table]
///     [[array-of-tables]]
///
/// Keys are bare words ([A-Za-z0-9_-]). Unknown keys are errors, not silently ignored. Lines may
/// end in CRLF. (Why not a TOML library: docs/decisions/0004.)
public struct ConfigFile: Sendable {
    public struct Value: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            case string(String)
            case integer(Int)
            case boolean(Bool)
            /// A one-line array of strings or numbers.
            case array([Kind])
        }
        public var kind: Kind
        public var line: Int
    }

    /// One table: its keys, where it started, and which keys a reader has used.
    public struct Table: Sendable {
        public var name: String
        public var line: Int
        public var values: [String: Value] = [:]
        public var order: [String] = []
    }

    public let path: String
    public private(set) var root: Table
    /// `[[name]]` tables, in order.
    public private(set) var arrays: [String: [Table]] = [:]
    /// `[name]` tables.
    public private(set) var tables: [String: Table] = [:]

    public init(text: String, path: String) throws(ConfigError) {
        self.path = path
        root = Table(name: "", line: 0)
        var current: (kind: Int, name: String) = (0, "")  // 0 root, 1 table, 2 array element
        for (index, rawLine) in text.textLines.enumerated() {
            let number = index + 1
            let line = Self.stripComment(String(rawLine)).trimmingSpaces
            if line.isEmpty { continue }
            if line.hasPrefix("[[") {
                guard line.hasSuffix("]]"), let name = Self.bareKey(String(line.dropFirst(2).dropLast(2)).trimmingSpaces) else {
                    throw ConfigError(file: path, line: number, "malformed array-of-tables header \(line)")
                }
                arrays[name, default: []].append(Table(name: name, line: number))
                current = (2, name)
                continue
            }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), let name = Self.bareKey(String(line.dropFirst().dropLast()).trimmingSpaces) else {
                    throw ConfigError(file: path, line: number, "malformed table header \(line)")
                }
                guard tables[name] == nil else {
                    throw ConfigError(file: path, line: number, key: name, "table defined twice (first on line \(tables[name]!.line))")
                }
                tables[name] = Table(name: name, line: number)
                current = (1, name)
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw ConfigError(file: path, line: number, "expected `key = value`, found \(line)")
            }
            let keyText = String(line[..<equals]).trimmingSpaces
            guard let key = Self.bareKey(keyText) else {
                throw ConfigError(file: path, line: number, key: keyText, "key must be letters, digits, - or _")
            }
            let value = try Self.parseValue(String(line[line.index(after: equals)...]).trimmingSpaces, line: number, key: key, path: path)
            func insert(_ table: inout Table) throws(ConfigError) {
                if let previous = table.values[key] {
                    throw ConfigError(file: path, line: number, key: key, "key set twice (first on line \(previous.line))")
                }
                table.values[key] = value
                table.order.append(key)
            }
            switch current.kind {
            case 0: try insert(&root)
            case 1: try insert(&tables[current.name]!)
            default:
                var elements = arrays[current.name]!
                try insert(&elements[elements.count - 1])
                arrays[current.name] = elements
            }
        }
    }

    public static func load(path: String) throws(ConfigError) -> ConfigFile {
        try ConfigFile(text: readTextFile(path), path: path)
    }

    private static func stripComment(_ line: String) -> String {
        var inString = false
        var escaped = false
        for (offset, c) in line.enumerated() {
            if escaped { escaped = false; continue }
            if c == "\\" && inString { escaped = true; continue }
            if c == "\"" { inString.toggle() }
            if c == "#" && !inString { return String(line.prefix(offset)) }
        }
        return line
    }

    private static func bareKey(_ text: String) -> String? {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
        return text
    }

    private static func parseValue(_ text: String, line: Int, key: String, path: String) throws(ConfigError) -> Value {
        if text.hasPrefix("[") {
            guard text.hasSuffix("]") else {
                throw ConfigError(file: path, line: line, key: key, "array does not end with ] on its line")
            }
            var elements: [Value.Kind] = []
            for item in try splitArray(String(text.dropFirst().dropLast()), line: line, key: key, path: path) {
                let element = try parseValue(item, line: line, key: key, path: path).kind
                if case .array = element { throw ConfigError(file: path, line: line, key: key, "arrays do not nest") }
                elements.append(element)
            }
            return Value(kind: .array(elements), line: line)
        }
        if text == "true" { return Value(kind: .boolean(true), line: line) }
        if text == "false" { return Value(kind: .boolean(false), line: line) }
        if let number = Int(text.replacingUnderscores) { return Value(kind: .integer(number), line: line) }
        guard text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") else {
            throw ConfigError(file: path, line: line, key: key, "value \(text.isEmpty ? "(empty)" : text) is not a \"string\", number, true, false or [array]")
        }
        var result = ""
        var escaped = false
        for c in text.dropFirst().dropLast() {
            if escaped {
                switch c {
                case "n": result.append("\n")
                case "r": result.append("\r")
                case "t": result.append("\t")
                case "\"", "\\": result.append(c)
                default: throw ConfigError(file: path, line: line, key: key, "unknown escape \\\(c) in string")
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "\"" {
                throw ConfigError(file: path, line: line, key: key, "unescaped quote inside string")
            } else {
                result.append(c)
            }
        }
        if escaped { throw ConfigError(file: path, line: line, key: key, "string ends with a lone backslash") }
        return Value(kind: .string(result), line: line)
    }

    /// The items of an array's inside, split at commas outside strings; a trailing comma is fine.
    private static func splitArray(_ text: String, line: Int, key: String, path: String) throws(ConfigError) -> [String] {
        var items: [String] = []
        var current = ""
        var inString = false
        var escaped = false
        for c in text {
            if escaped { escaped = false; current.append(c); continue }
            if c == "\\" && inString { escaped = true; current.append(c); continue }
            if c == "\"" { inString.toggle() }
            if c == "," && !inString {
                items.append(current.trimmingSpaces)
                current = ""
                continue
            }
            current.append(c)
        }
        if inString { throw ConfigError(file: path, line: line, key: key, "unterminated string in array") }
        let last = current.trimmingSpaces
        if !last.isEmpty { items.append(last) }
        if items.contains(where: \.isEmpty) { throw ConfigError(file: path, line: line, key: key, "empty array element") }
        return items
    }
}

/// Typed reads from one table, each failure naming file, line and key.
public struct ConfigReader {
    public let file: ConfigFile
    public let table: ConfigFile.Table

    public init(file: ConfigFile, table: ConfigFile.Table) {
        self.file = file
        self.table = table
    }

    private func located(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file.path, line: table.values[key]?.line ?? (table.line == 0 ? nil : table.line), key: key, message)
    }

    /// Fails on any key not in `known`: a misspelt key must not be silently ignored.
    public func rejectUnknownKeys(_ known: Set<String>) throws(ConfigError) {
        for key in table.order where !known.contains(key) {
            throw located(key, "unknown key\(table.name.isEmpty ? "" : " in [\(table.name)]"); known keys: \(known.sorted().joined(separator: ", "))")
        }
    }

    public func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = table.values[key] else { return nil }
        guard case .string(let text) = value.kind else { throw located(key, "must be a \"string\"") }
        return text
    }

    /// A string or an array of strings.
    public func strings(_ key: String) throws(ConfigError) -> [String]? {
        guard let value = table.values[key] else { return nil }
        switch value.kind {
        case .string(let text): return [text]
        case .array(let elements):
            var out: [String] = []
            for element in elements {
                guard case .string(let text) = element else { throw located(key, "must be a \"string\" or an array of strings") }
                out.append(text)
            }
            return out
        default:
            throw located(key, "must be a \"string\" or an array of strings")
        }
    }

    /// Each string parsed by `parse`; a failure names the item.
    public func parsed<T>(_ key: String, _ parse: (String) throws -> T) throws(ConfigError) -> [T]? {
        guard let items = try strings(key) else { return nil }
        var out: [T] = []
        for item in items {
            do { out.append(try parse(item)) } catch { throw located(key, "\(error)") }
        }
        return out
    }

    /// Numbers, or strings, each turned into a value by `parse` (ports: 5432 or "8000-8080").
    public func items<T>(_ key: String, _ parse: (String) throws -> T) throws(ConfigError) -> [T]? {
        guard let value = table.values[key] else { return nil }
        let elements: [ConfigFile.Value.Kind]
        if case .array(let all) = value.kind { elements = all } else { elements = [value.kind] }
        var out: [T] = []
        for element in elements {
            let text: String
            switch element {
            case .string(let s): text = s
            case .integer(let n): text = String(n)
            default: throw located(key, "must be numbers or strings")
            }
            do { out.append(try parse(text)) } catch { throw located(key, "\(error)") }
        }
        return out
    }

    /// An error at `key` of this table (for checks that need more than one value).
    public func error(_ key: String, _ message: String) -> ConfigError { located(key, message) }

    public var location: (file: String, line: Int) { (file.path, table.line) }

    public func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let text = try string(key) else {
            throw ConfigError(file: file.path, line: table.line == 0 ? nil : table.line, key: key, "required key is missing\(table.name.isEmpty ? "" : " in [\(table.name)]")")
        }
        return text
    }

    public func integer(_ key: String, in range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let value = table.values[key] else { return nil }
        guard case .integer(let number) = value.kind else { throw located(key, "must be a number") }
        guard range.contains(number) else { throw located(key, "\(number) is outside \(range.lowerBound)...\(range.upperBound)") }
        return number
    }

    public func boolean(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = table.values[key] else { return nil }
        guard case .boolean(let flag) = value.kind else { throw located(key, "must be true or false") }
        return flag
    }

    public func address(_ key: String) throws(ConfigError) -> SocketAddress? {
        guard let text = try string(key) else { return nil }
        do {
            return try SocketAddress(parsing: text)
        } catch {
            throw located(key, error.description)
        }
    }

    public func requiredAddress(_ key: String) throws(ConfigError) -> SocketAddress {
        _ = try requiredString(key)
        return try address(key)!
    }
}

extension String {
    /// The lines of a text file, ended by LF or CRLF. (In Swift "\r\n" is one Character, so
    /// splitting on "\n" alone leaves a CRLF file in one piece.)
    var textLines: [Substring] {
        split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    }

    var trimmingSpaces: String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" || first == "\r" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" || last == "\r" { slice.removeLast() }
        return String(slice)
    }

    var replacingUnderscores: String { split(separator: "_").joined() }
}
