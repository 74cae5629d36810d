/// SO_RCVBUF of the MPTCP leg, on both ends: the client's connections to its servers, the
/// server's listeners (accepted connections inherit it). It bounds the data-level window the
/// sending end may fill, and so the bytes the sender has already queued on its subflows when
/// a path dies: those go out again on the survivors, behind everything queued there. Measured
/// (docs/decisions/0015): all paths active, delays 5/10/40 ms, wifi set down mid-transfer, the
/// longest gap went from 250-400 ms to 70-110 ms at 1 MiB; but without path delays the
/// chain then delivered 0.33-0.59 of the paths instead of 0.80. So it is a setting, with the
/// kernel's choice as the server's default and the client's measured 4 MiB as its own.
public enum MPTCPReceiveBuffer {
    /// The client's default. An MPTCP socket read only with splice(2) never grows its receive
    /// buffer (autotuning runs in recvmsg): downloads crawled at 2-4 Mbit/s over 90 Mbit/s of
    /// paths until a fixed buffer was set (the kernel doubles it, capped by net.core.rmem_max).
    public static let clientDefault: Int32 = 4 << 20
    /// Accepted values, bytes: 0 (the kernel's autotuning, the server's default), else 64 KiB
    /// to 64 MiB.
    public static let range: ClosedRange<Int> = 65_536...(64 << 20)

    public static func isValid(_ value: Int) -> Bool { value == 0 || range.contains(value) }
}
