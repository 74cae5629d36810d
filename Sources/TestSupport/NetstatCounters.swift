/// The kernel's protocol counters from /proc/net/netstat (per network namespace), read when
/// a test fails so that the report says what the kernel did: an MPTCP-level retransmission
/// (`MPTcpExtMPTCPRetrans`), data that matched no mapping (`DSSNotMatching`), duplicates the
/// receiver dropped (`DuplicateData`). The file pairs a header line with a values line per
/// group: `MPTcpExt: MPCapableSYNRX …` then `MPTcpExt: 3 …`.
public enum NetstatCounters {
    /// The counters of `group` in file order, name prefixed with the group
    /// ("MPTcpExtMPTCPRetrans", as nstat names them). Lines that do not pair up are skipped.
    public static func parse(_ text: String, group: String = "MPTcpExt") -> [(name: String, value: UInt64)] {
        let prefix = group + ":"
        let lines = text.split(separator: "\n").filter { $0.hasPrefix(prefix) }
        var result: [(name: String, value: UInt64)] = []
        var index = 0
        while index + 1 < lines.count {
            let names = lines[index].split(separator: " ").dropFirst()
            let values = lines[index + 1].split(separator: " ").dropFirst()
            index += 2
            guard names.count == values.count else { continue }
            for (name, value) in zip(names, values) {
                guard let number = UInt64(value) else { continue }
                result.append((group + name, number))
            }
        }
        return result
    }

    /// "MPTcpExtMPCapableSYNRX=3 MPTcpExtMPTCPRetrans=12 …": the counters that are not zero.
    public static func nonZeroSummary(_ text: String, group: String = "MPTcpExt") -> String {
        let counters = parse(text, group: group).filter { $0.value != 0 }
        return counters.isEmpty ? "(all zero)" : counters.map { "\($0.name)=\($0.value)" }.joined(separator: " ")
    }
}
