import Glibc

/// What kind of uplink an interface is; the policy flags its endpoints by class.
public enum InterfaceClass: String, Sendable, CaseIterable, CustomStringConvertible {
    case wifi
    case ethernet
    case cellular
    /// Virtual or unknown (bridges, tunnels, veth without configuration): not managed.
    case other

    public var description: String { rawValue }

    public init?(parsing text: String) {
        switch text.lowercased() {
        case "wifi", "wi-fi", "wlan": self = .wifi
        case "ethernet", "eth": self = .ethernet
        case "cellular", "cell", "wwan", "lte", "5g": self = .cellular
        case "other", "ignore", "none": self = .other
        default: return nil
        }
    }
}

/// Reads what sysfs says about an interface; a protocol so tests can supply a fake tree.
public protocol InterfaceFacts {
    func exists(_ path: String) -> Bool
    func read(_ path: String) -> String?
    func linkTarget(_ path: String) -> String?
}

public struct SysfsFacts: InterfaceFacts {
    public init() {}
    public func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
    public func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = fread(&buffer, 1, buffer.count - 1, file)
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    public func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Classifies interfaces (shared/reference/kernel-mptcp.md §5): configuration first, then
/// Wi-Fi (phy80211, wireless, DEVTYPE=wlan), cellular (DEVTYPE=wwan, WWAN or tethering
/// drivers, wwan/rmnet/wwp/usb names), Ethernet (a real device driver), else other.
public struct InterfaceClassifier: Sendable {
    public var overrides: [String: InterfaceClass]
    private static let cellularDrivers = ["qmi_wwan", "cdc_mbim", "mhi_net", "t7xx", "iosm", "ipheth", "rndis_host", "cdc_ncm", "cdc_ether"]
    private static let cellularPrefixes = ["wwan", "rmnet", "wwp", "usb"]

    public init(overrides: [String: InterfaceClass] = [:]) {
        self.overrides = overrides
    }

    public func classify(_ name: String, facts: InterfaceFacts = SysfsFacts()) -> InterfaceClass {
        if let configured = overrides[name] { return configured }
        let base = "/sys/class/net/\(name)"
        let uevent = facts.read("\(base)/uevent") ?? ""
        let devtype = uevent.split(separator: "\n").first { $0.hasPrefix("DEVTYPE=") }.map { String($0.dropFirst(8)) }
        if facts.exists("\(base)/phy80211") || facts.exists("\(base)/wireless") || devtype == "wlan" { return .wifi }
        let driver = facts.linkTarget("\(base)/device/driver").map { String($0.split(separator: "/").last ?? "") }
        if devtype == "wwan" { return .cellular }
        if let driver, Self.cellularDrivers.contains(where: { driver.hasPrefix($0) }) || driver.hasPrefix("rmnet") { return .cellular }
        if Self.cellularPrefixes.contains(where: { name.hasPrefix($0) }) { return .cellular }
        if driver != nil { return .ethernet }
        return .other
    }
}

extension InterfaceClassifier {
    /// A classifier with `IF=CLASS` overrides (the `--class` option of `client`, `pm` and
    /// `mptcp-stats`); the error names the item that is not of that form.
    public init(parsingOverrides items: [String]) throws(OverrideError) {
        self.init()
        for item in items {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, let kind = InterfaceClass(parsing: parts[1]) else {
                throw OverrideError(description: "\(item): expected IF=wifi|ethernet|cellular|other")
            }
            overrides[parts[0]] = kind
        }
    }

    public struct OverrideError: Error, CustomStringConvertible {
        public var description: String
    }
}
