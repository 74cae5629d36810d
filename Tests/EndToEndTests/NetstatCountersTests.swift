import Foundation
import TestSupport
import Testing

@Suite("Kernel counters in failure reports")
struct NetstatCountersTests {
    @Test("/proc/net/netstat groups pair a header line with a values line; a group is picked by name, zeros are left out of the summary")
    func parsesPairedLines() {
        let text = """
            TcpExt: SyncookiesSent SyncookiesRecv
            TcpExt: 5 6
            MPTcpExt: MPCapableSYNRX MPTCPRetrans DuplicateData
            MPTcpExt: 3 0 41
            """
        let counters = NetstatCounters.parse(text)
        #expect(counters.map(\.name) == ["MPTcpExtMPCapableSYNRX", "MPTcpExtMPTCPRetrans", "MPTcpExtDuplicateData"])
        #expect(counters.map(\.value) == [3, 0, 41])
        #expect(NetstatCounters.nonZeroSummary(text) == "MPTcpExtMPCapableSYNRX=3 MPTcpExtDuplicateData=41")
        #expect(NetstatCounters.parse(text, group: "TcpExt").map(\.value) == [5, 6])
    }

    @Test("a header without its values, or with a different count, yields nothing rather than misnamed numbers")
    func mismatchedLinesAreSkipped() {
        #expect(NetstatCounters.parse("MPTcpExt: A B\nMPTcpExt: 1\n").isEmpty)
        #expect(NetstatCounters.parse("MPTcpExt: A B\n").isEmpty)
        #expect(NetstatCounters.nonZeroSummary("") == "(all zero)")
    }

    @Test("this kernel's own file has the MPTCP group", .enabled(if: kernelTestsEnabled, "needs an MPTCP kernel"))
    func readsTheRunningKernel() throws {
        let text = try String(contentsOfFile: "/proc/net/netstat", encoding: .utf8)
        #expect(NetstatCounters.parse(text).contains { $0.name == "MPTcpExtMPCapableSYNRX" })
    }
}
