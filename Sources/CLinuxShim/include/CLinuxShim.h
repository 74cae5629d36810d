// CLinuxShim: the few Linux calls and constants Swift's Glibc module does not expose.
//
// Why this exists: Swift imports glibc without _GNU_SOURCE, so splice(2), pipe2's
// F_SETPIPE_SZ, accept4's flags, setns(2) and a handful of socket constants are
// invisible to Swift. Every symbol here is prefixed `mpx_` so it can never clash
// with a libc symbol of the same name, and each wrapper is a direct call: error
// handling (EINTR retries, errno to Swift errors) lives in DataPlane/System.swift.
#ifndef MPX_CLINUXSHIM_H
#define MPX_CLINUXSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#ifdef __cplusplus
extern "C" {
#endif

// splice(2) between a socket and a pipe; flags are MPX_SPLICE_F_*.
ssize_t mpx_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
extern const unsigned int MPX_SPLICE_F_MOVE;
extern const unsigned int MPX_SPLICE_F_NONBLOCK;
extern const unsigned int MPX_SPLICE_F_MORE;

// Bytes queued for reading (FIONREAD / SIOCINQ); -1 on error.
int mpx_bytes_queued(int fd);

// A non-blocking, close-on-exec pipe: fds[0] read end, fds[1] write end.
int mpx_pipe_nonblocking(int fds[2]);
// F_SETPIPE_SZ / F_GETPIPE_SZ; returns the capacity the kernel granted.
int mpx_pipe_set_size(int fd, int size);

// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC.
int mpx_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len);

// Enter a network namespace (CLONE_NEWNET) on the calling thread only.
int mpx_setns_net(int fd);

// Name the calling thread (PR_SET_NAME: what /proc/PID/task/TID/comm, top -H and perf show);
// the kernel keeps the first 15 bytes. pthread_setname_np needs _GNU_SOURCE, which Glibc's
// Swift module does not define.
int mpx_set_thread_name(const char *name);

// getrandom(2) with no flags: fills `len` bytes from the kernel's generator in one call
// (Swift's SystemRandomNumberGenerator makes one call per 8 bytes). Returns the bytes filled.
long mpx_getrandom(void *buffer, unsigned long len);

// Drops this process's mappings of the main program's read-only segments (its code and
// constants), which start-up faulted in; the page cache keeps them and code that runs again
// faults its page back. Skips RELRO and refuses (-EPERM) a program with text relocations.
// Returns the bytes advised, or -errno. startup_pages.c says why.
long mpx_release_program_text(void);

// The process's resident set in bytes (/proc/self/statm), or -1.
long mpx_resident_bytes(void);

// Thread id of the caller (for logs and per-thread namespace checks).
int mpx_gettid(void);

// Socket constants missing from Swift's view of the headers.
extern const int MPX_IPPROTO_MPTCP;     // 262
extern const int MPX_SOL_MPTCP;         // 284
extern const int MPX_SO_ORIGINAL_DST;   // 80 (SOL_IP; IP6T_SO_ORIGINAL_DST at SOL_IPV6 is 80 too)
extern const int MPX_IP_TRANSPARENT;    // 19 (SOL_IP)
extern const int MPX_IPV6_TRANSPARENT;  // 75 (SOL_IPV6)
extern const int MPX_TCP_FASTOPEN;      // 23
extern const int MPX_TCP_FASTOPEN_CONNECT; // 30
extern const int MPX_TCP_NODELAY;
extern const int MPX_TCP_INFO;
extern const int MPX_MSG_FASTOPEN;
extern const unsigned int MPX_EPOLLIN;
extern const unsigned int MPX_EPOLLOUT;
extern const unsigned int MPX_EPOLLERR;
extern const unsigned int MPX_EPOLLHUP;
extern const unsigned int MPX_EPOLLRDHUP;
extern const unsigned int MPX_EPOLLET;

#ifdef __cplusplus
}
#endif
#endif
