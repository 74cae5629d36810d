import Glibc

/// The controlling terminal in full-screen mode: raw input, the alternate screen, a hidden
/// cursor, and frames drawn in place (cursor home, each line cleared to its end, the rest
/// of the screen cleared) in one write, so redraws do not flicker, locally or over SSH.
final class Terminal {
    private var original = termios()
    private var active = false

    /// nil unless both stdin and stdout are terminals.
    init?() {
        guard isatty(0) == 1, isatty(1) == 1, tcgetattr(0, &original) == 0 else { return nil }
    }

    func enter() {
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        raw.c_cc.6 = 0  // VMIN: reads return what is there
        raw.c_cc.5 = 0  // VTIME
        tcsetattr(0, TCSAFLUSH, &raw)
        write("\u{1B}[?1049h\u{1B}[?25l\u{1B}[H\u{1B}[2J")
        active = true
    }

    func leave() {
        guard active else { return }
        write("\u{1B}[0m\u{1B}[?25h\u{1B}[?1049l")
        tcsetattr(0, TCSAFLUSH, &original)
        active = false
    }

    deinit { leave() }

    /// Columns × rows, 80 × 24 when the terminal does not say.
    func size() -> (width: Int, height: Int) {
        var size = winsize()
        guard ioctl(1, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0, size.ws_row > 0 else { return (80, 24) }
        return (Int(size.ws_col), Int(size.ws_row))
    }

    func draw(_ lines: [String]) {
        var frame = "\u{1B}[H"
        for (index, line) in lines.enumerated() {
            frame += line + "\u{1B}[K" + (index == lines.count - 1 ? "" : "\r\n")
        }
        frame += "\u{1B}[J"
        write(frame)
    }

    /// The keys typed since the last call (non-blocking); nil at the end of input.
    func readKeys() -> [ViewState.Key]? {
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(0, &buffer, buffer.count)
        if count == 0 { return nil }
        guard count > 0 else { return errno == EAGAIN || errno == EINTR ? [] : nil }
        return KeyDecoder.keys(Array(buffer[0..<count]))
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(1, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }
            offset += written
        }
        bytes.removeAll()
    }
}

/// Terminal input bytes to keys: printable characters, arrows (CSI or SS3 form), Enter,
/// Escape (a lone ESC), Backspace, Ctrl-C.
enum KeyDecoder {
    static func keys(_ bytes: [UInt8]) -> [ViewState.Key] {
        var keys: [ViewState.Key] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case 0x1B:
                if index + 1 < bytes.count, bytes[index] == UInt8(ascii: "[") || bytes[index] == UInt8(ascii: "O") {
                    let final = bytes[index + 1]
                    index += 2
                    if final == UInt8(ascii: "A") { keys.append(.up) } else if final == UInt8(ascii: "B") { keys.append(.down) }
                } else {
                    keys.append(.escape)
                }
            case 0x0D, 0x0A: keys.append(.enter)
            case 0x7F, 0x08: keys.append(.backspace)
            case 0x03: keys.append(.interrupt)
            case 0x20...0x7E: keys.append(.character(Character(Unicode.Scalar(byte))))
            default: continue
            }
        }
        return keys
    }
}
