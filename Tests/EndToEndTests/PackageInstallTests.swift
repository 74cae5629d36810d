import Foundation
import Glibc
import TestSupport
import Testing

/// The Debian package as a user installs it: tools/package/deb/test-install puts the .deb that
/// tools/test built (.build/package) into a fresh debootstrap'd Debian root, checks the binaries
/// (no Swift toolchain there, ldd, size guards), the units (systemd-analyze verify), the
/// conffiles, user and permissions, and then runs a server and a client from their installed
/// units' ExecStart, users and capabilities in namespaces, with a checked download and a `check`.
@Suite("Debian package in a fresh root", .enabled(if: kernelTestsEnabled, "needs root, netns and MPTCP"))
struct PackageInstallTests {
    static var builtPackage: String? {
        let directory = Testbed.repositoryRoot + "/.build/package"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("mptcp-proxy_") && $0.hasSuffix(".deb") }.sorted().last.map { directory + "/" + $0 }
    }

    @Test("apt-get install into a debootstrap'd bookworm: binaries, units, conffiles; a server and a client run from their units")
    func installAndRun() throws {
        guard let package = Self.builtPackage else {
            // tools/test builds it (as root) before the tests; a bare `swift test` may not have it.
            if KernelTestGate.mustRun { Issue.record("CI=true: no .build/package/mptcp-proxy_*.deb: tools/test builds it before the tests") }
            else { print("⚠️  SKIPPED: no .build/package/mptcp-proxy_*.deb (run tools/package/deb/build, or tools/test)") }
            return
        }
        guard access("/usr/sbin/debootstrap", X_OK) == 0 else {
            if KernelTestGate.mustRun { Issue.record("CI=true: debootstrap is not installed (tools/install-deps installs it)") }
            else { print("⚠️  SKIPPED: debootstrap is not installed") }
            return
        }
        let output: String
        do {
            output = try Testbed.run([Testbed.repositoryRoot + "/tools/package/deb/test-install", package])
        } catch {
            Issue.record("test-install failed: \(error)")
            return
        }
        print(output)
        #expect(output.contains("answers the Info exchange over MPTCP"))
        #expect(output.contains("== PASS"))
    }
}
