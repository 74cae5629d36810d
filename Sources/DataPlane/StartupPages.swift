import CLinuxShim

/// What handing back the program's start-up pages did: the resident set before and after.
public struct StartupPagesRelease: Sendable, Equatable {
    /// Bytes of read-only program segments whose mappings were dropped (resident or not).
    public var advisedBytes: UInt64
    public var residentBefore: UInt64
    public var residentAfter: UInt64
}

/// Drops the mappings of the program's code and constants that start-up faulted in.
///
/// Why: start-up runs argument parsing, configuration loading and the Swift runtime's first
/// type lookups, and touches about 8 MB of a static binary's text that an idle relay never
/// runs again; those pages stayed resident, most of the idle process's 13 MB. They are clean
/// copies of the file, so nothing is lost: the page cache keeps them, and the code that runs
/// again (event loops, the relay, the path manager) faults its pages back in as minor faults.
/// Called once, when every listener is up; measured in docs/decisions/0020.
public func releaseStartupPages() throws(SystemError) -> StartupPagesRelease {
    let before = mpx_resident_bytes()
    let advised = mpx_release_program_text()
    guard advised >= 0 else { throw SystemError("madvise(MADV_DONTNEED) of the program's text", errno: Int32(-advised)) }
    let after = mpx_resident_bytes()
    return StartupPagesRelease(advisedBytes: UInt64(advised), residentBefore: UInt64(max(before, 0)), residentAfter: UInt64(max(after, 0)))
}
