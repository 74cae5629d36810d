/// Labels from a proxy's `/metrics`: which destination each MPTCP connection is relayed to.
/// The proxy exports one `mptcp_proxy_connection_info` line per live connection, naming the
/// MPTCP socket's local and remote address (what sock_diag shows) and the destination.
public enum ProxyLabels {
    public static let metricName = "mptcp_proxy_connection_info"

    public static func key(local: String, remote: String) -> String { "\(local) \(remote)" }

    /// Destinations by `key(local:remote:)`, from Prometheus text. Lines that are not
    /// well-formed connection_info samples are skipped.
    public static func parse(_ text: String) -> [String: String] {
        var labels: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix(metricName + "{") {
            guard let values = parseLabels(line.dropFirst(metricName.count + 1)),
                  let local = values["local"], let remote = values["remote"], let destination = values["destination"] else { continue }
            labels[key(local: local, remote: remote)] = destination
        }
        return labels
    }

    /// `a="x",b="y\"z"} 1` → [a: x, b: y"z]; nil when the label set is malformed.
    static func parseLabels(_ text: Substring) -> [String: String]? {
        var result: [String: String] = [:]
        var rest = text
        while true {
            if rest.first == "}" { return result }
            guard let equals = rest.firstIndex(of: "=") else { return nil }
            let name = rest[..<equals].trimmingCharacters(in: " ,")
            rest = rest[rest.index(after: equals)...]
            guard rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            var value = ""
            var closed = false
            while let character = rest.first {
                rest = rest.dropFirst()
                if character == "\\" {
                    guard let escaped = rest.first else { return nil }
                    rest = rest.dropFirst()
                    value.append(escaped == "n" ? "\n" : escaped)
                } else if character == "\"" {
                    closed = true
                    break
                } else {
                    value.append(character)
                }
            }
            guard closed, !name.isEmpty else { return nil }
            result[name] = value
            if rest.first == "," { rest = rest.dropFirst() }
        }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
