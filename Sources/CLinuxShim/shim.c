// See include/CLinuxShim.h for why this file exists.
#define _GNU_SOURCE
#include "CLinuxShim.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/random.h>
#include <sys/prctl.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

const unsigned int MPX_SPLICE_F_MOVE = SPLICE_F_MOVE;
const unsigned int MPX_SPLICE_F_NONBLOCK = SPLICE_F_NONBLOCK;
const unsigned int MPX_SPLICE_F_MORE = SPLICE_F_MORE;

const int MPX_IPPROTO_MPTCP = 262;
const int MPX_SOL_MPTCP = 284;
const int MPX_SO_ORIGINAL_DST = SO_ORIGINAL_DST;
const int MPX_IP_TRANSPARENT = IP_TRANSPARENT;
const int MPX_IPV6_TRANSPARENT = IPV6_TRANSPARENT;
const int MPX_TCP_FASTOPEN = TCP_FASTOPEN;
const int MPX_TCP_FASTOPEN_CONNECT = TCP_FASTOPEN_CONNECT;
const int MPX_TCP_NODELAY = TCP_NODELAY;
const int MPX_TCP_INFO = TCP_INFO;
const int MPX_MSG_FASTOPEN = MSG_FASTOPEN;
const unsigned int MPX_EPOLLIN = EPOLLIN;
const unsigned int MPX_EPOLLOUT = EPOLLOUT;
const unsigned int MPX_EPOLLERR = EPOLLERR;
const unsigned int MPX_EPOLLHUP = EPOLLHUP;
const unsigned int MPX_EPOLLRDHUP = EPOLLRDHUP;
const unsigned int MPX_EPOLLET = EPOLLET;

_Static_assert(SO_ORIGINAL_DST == 80, "SO_ORIGINAL_DST is 80 on Linux");
_Static_assert(IP6T_SO_ORIGINAL_DST == SO_ORIGINAL_DST, "one getsockopt name serves both families");
_Static_assert(IP_TRANSPARENT == 19 && IPV6_TRANSPARENT == 75, "transparent socket options");
_Static_assert(TCP_FASTOPEN_CONNECT == 30, "TCP_FASTOPEN_CONNECT is 30 on Linux");

ssize_t mpx_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

int mpx_bytes_queued(int fd) {
    int queued = 0;
    if (ioctl(fd, FIONREAD, &queued) < 0) {
        return -1;
    }
    return queued;
}

int mpx_pipe_nonblocking(int fds[2]) {
    return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}

int mpx_pipe_set_size(int fd, int size) {
    if (fcntl(fd, F_SETPIPE_SZ, size) < 0) {
        return -1;
    }
    return fcntl(fd, F_GETPIPE_SZ);
}

int mpx_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int mpx_setns_net(int fd) {
    return setns(fd, CLONE_NEWNET);
}

int mpx_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int mpx_gettid(void) {
    return (int)syscall(SYS_gettid);
}

long mpx_getrandom(void *buffer, unsigned long len) {
    return getrandom(buffer, len, 0);
}
