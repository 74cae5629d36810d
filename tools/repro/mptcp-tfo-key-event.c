// Reproducer for docs/decisions/0006: does epoll say when a TCP-Fast-Open-accepted MPTCP
// socket gets the client's key? Run by tools/repro/mptcp-tfo-key-event (as root, in a testbed).
//
// Server side: accept TFO MPTCP connections, register each with edge-triggered epoll, and
// print every epoll event with the MPTCP_INFO key flag (bit 1: REMOTE_KEY_RECEIVED) and the
// first subflow's TCP state (3 SYN_RECV, 1 ESTABLISHED); reply once the key is there.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static unsigned flags_of(int fd) { unsigned char b[96]; socklen_t l = sizeof b; if (getsockopt(fd, 284, 1, b, &l) < 0) return 0xffff; unsigned f; memcpy(&f, b + 8, 4); return f; }
static int state_of(int fd) { struct tcp_info t; socklen_t l = sizeof t; getsockopt(fd, IPPROTO_TCP, TCP_INFO, &t, &l); return t.tcpi_state; }
int main(int argc, char **argv) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ls = socket(AF_INET, SOCK_STREAM, 262), one = 1, q = 16;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); setsockopt(ls, IPPROTO_TCP, TCP_FASTOPEN, &q, sizeof q);
    bind(ls, (void *)&a, sizeof a); listen(ls, 16);
    int ep = epoll_create1(0);
    for (int c = 0; c < 8; c++) {
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK); double t0 = now_ms();
        char buf[64]; int n = recv(fd, buf, sizeof buf, 0);
        printf("accepted: read %d, key 0x%x, state %d\n", n, flags_of(fd), state_of(fd));
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        while (now_ms() - t0 < 3000) {
            struct epoll_event got; int k = epoll_wait(ep, &got, 1, 3000);
            if (k <= 0) break;
            printf("  +%8.3f ms events 0x%03x key 0x%x state %d\n", now_ms() - t0, got.events, flags_of(fd), state_of(fd));
            if (flags_of(fd) & 2) { send(fd, "reply", 5, MSG_NOSIGNAL); printf("  replied\n"); break; }
        }
        epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); usleep(200000); close(fd);
    }
}
