import Glibc

/// Fixed-point text for the screen ("12.34", "07"): what `String(format:)` gave, without linking
/// Foundation (and ICU) into mptcp-stats only for that.
enum NumberText {
    /// `value` rounded half away from zero to `digits` decimals (0...6); "nan", "inf" and "-inf"
    /// for values that are not finite.
    static func fixed(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
        let digits = min(max(digits, 0), 6)
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(value) * scale).rounded()
        // Beyond 2^63 nothing on a screen is meaningful; saturate rather than trap.
        guard scaled < 9.2e18 else { return value < 0 ? "-inf" : "inf" }
        let units = UInt64(scaled)
        let whole = units / UInt64(scale)
        let sign = value < 0 && units != 0 ? "-" : ""
        guard digits > 0 else { return sign + String(whole) }
        let fraction = String(units % UInt64(scale))
        return sign + String(whole) + "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }

    /// `value` with leading zeros to at least `width` digits (clock fields).
    static func padded(_ value: Int, width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
