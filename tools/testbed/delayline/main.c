// mpx-delayline: a one-way delay for the testbed, which has tc tbf and htb but no netem.
//
// nftables hands every packet of a path to an NFQUEUE; this program holds each packet's
// verdict for DELAY milliseconds and then accepts it. The delay is the same for every packet,
// so verdicts fall due in arrival order, and one NFQNL_MSG_VERDICT_BATCH accepts every packet
// up to the newest one that is due. Only packet metadata is copied to user space.
//
//   mpx-delayline --queue N --delay-ms D     (inside the namespace whose egress it delays)
//
// Exits on SIGTERM/SIGINT, accepting what it still holds first: a stopped delay line never
// leaves packets stuck (nft's `queue ... bypass` lets traffic through once it is gone).
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>

#define MAX_HELD 65536u

struct held { uint32_t id; uint64_t due_ns; };

static struct held ring[MAX_HELD];
static unsigned head, count;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static struct nlmsghdr *queue_header(char *buf, int type, uint16_t queue) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    struct nfgenmsg *nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    nfg->res_id = htons(queue);
    return nlh;
}

static int send_or_die(struct mnl_socket *nl, struct nlmsghdr *nlh, const char *what) {
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        fprintf(stderr, "mpx-delayline: %s: %s\n", what, strerror(errno));
        return -1;
    }
    return 0;
}

/// Accepts every held packet up to and including `id` (ids grow by one per packet).
static int accept_through(struct mnl_socket *nl, uint16_t queue, uint32_t id) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = queue_header(buf, NFQNL_MSG_VERDICT_BATCH, queue);
    struct nfqnl_msg_verdict_hdr verdict = { .verdict = htonl(NF_ACCEPT), .id = htonl(id) };
    mnl_attr_put(nlh, NFQA_VERDICT_HDR, sizeof(verdict), &verdict);
    return send_or_die(nl, nlh, "verdict");
}

static int on_packet(const struct nlmsghdr *nlh, void *data) {
    (void)data;
    struct nlattr *attr;
    uint64_t delay = *(uint64_t *)data;
    mnl_attr_for_each(attr, nlh, sizeof(struct nfgenmsg)) {
        if (mnl_attr_get_type(attr) != NFQA_PACKET_HDR) continue;
        if (mnl_attr_get_payload_len(attr) < sizeof(struct nfqnl_msg_packet_hdr)) return MNL_CB_ERROR;
        const struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr);
        if (count == MAX_HELD) return MNL_CB_OK;  // full: the kernel's queue limit drops the rest
        ring[(head + count) % MAX_HELD] = (struct held){ ntohl(ph->packet_id), now_ns() + delay };
        count++;
    }
    return MNL_CB_OK;
}

static void on_signal(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
    long queue = -1, delay_ms = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--queue")) queue = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--delay-ms")) delay_ms = strtol(argv[i + 1], NULL, 10);
    }
    if (queue < 0 || queue > 65535 || delay_ms < 0 || delay_ms > 10000) {
        fprintf(stderr, "usage: mpx-delayline --queue 0..65535 --delay-ms 0..10000\n");
        return 2;
    }
    uint64_t delay = (uint64_t)delay_ms * 1000000u;
    // Started in the background by a script that a test reads to EOF: holding its pipes (fds
    // inherited past 2) would keep that reader waiting for as long as we run. And a parent's
    // blocked signals (test runners block them) must not make us deaf to SIGTERM.
    closefrom(3);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    struct mnl_socket *nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) { perror("mpx-delayline: netlink"); return 1; }
    int size = 8 << 20;
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
    int on = 1;  // a burst beyond the socket buffer is dropped by the kernel, not fatal here
    setsockopt(mnl_socket_get_fd(nl), SOL_NETLINK, NETLINK_NO_ENOBUFS, &on, sizeof(on));

    char buf[MNL_SOCKET_BUFFER_SIZE + 0xffff / 2];
    struct nlmsghdr *nlh = queue_header(buf, NFQNL_MSG_CONFIG, (uint16_t)queue);
    struct nfqnl_msg_config_cmd bind = { .command = NFQNL_CFG_CMD_BIND };
    mnl_attr_put(nlh, NFQA_CFG_CMD, sizeof(bind), &bind);
    if (send_or_die(nl, nlh, "bind queue")) return 1;
    nlh = queue_header(buf, NFQNL_MSG_CONFIG, (uint16_t)queue);
    struct nfqnl_msg_config_params params = { .copy_range = htonl(0), .copy_mode = NFQNL_COPY_META };
    mnl_attr_put(nlh, NFQA_CFG_PARAMS, sizeof(params), &params);
    mnl_attr_put_u32(nlh, NFQA_CFG_QUEUE_MAXLEN, htonl(MAX_HELD));
    if (send_or_die(nl, nlh, "configure queue")) return 1;
    fprintf(stderr, "mpx-delayline: queue %ld, %ld ms\n", queue, delay_ms);

    // Wake-ups exactly when the oldest packet falls due: ppoll takes nanoseconds (poll's
    // milliseconds, rounded up, held packets up to 1 ms long), and the default 50 µs timer
    // slack (more, scaled with the timeout, for poll) is narrowed to 1 µs. Measured on a
    // 2-core VM: 20 ms each way gave 43.1 ms round trips with poll, within 0.3 ms with this.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    // And at real-time priority where allowed (root): on 2 busy cores a normal task wakes
    // late, and the test suite runs transfers beside the delay test (medians of 21.4 ms for a
    // 20 ms round trip seen in CI, 20.6 on an idle machine). It sleeps in ppoll between
    // packets, so it takes a core only for the moments it has verdicts to give.
    struct sched_param realtime = { .sched_priority = 10 };
    if (sched_setscheduler(0, SCHED_FIFO, &realtime) != 0)
        fprintf(stderr, "mpx-delayline: no real-time priority (%s); delays may run long under load\n", strerror(errno));
    struct pollfd pfd = { .fd = mnl_socket_get_fd(nl), .events = POLLIN };
    while (!stopping) {
        struct timespec wait_for, *timeout = NULL;
        if (count) {
            uint64_t now = now_ns(), due = ring[head].due_ns, left = due <= now ? 0 : due - now;
            wait_for = (struct timespec){ (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
            timeout = &wait_for;
        }
        int ready = ppoll(&pfd, 1, timeout, NULL);
        if (ready < 0 && errno != EINTR) { perror("mpx-delayline: poll"); break; }
        if (ready > 0) {
            for (;;) {
                ssize_t n = recv(pfd.fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n < 0) break;
                mnl_cb_run(buf, (size_t)n, 0, 0, on_packet, &delay);
            }
        }
        uint64_t now = now_ns();
        uint32_t last = 0;
        int any = 0;
        while (count && ring[head].due_ns <= now) {
            last = ring[head].id;
            any = 1;
            head = (head + 1) % MAX_HELD;
            count--;
        }
        if (any && accept_through(nl, (uint16_t)queue, last)) break;
    }
    if (count) accept_through(nl, (uint16_t)queue, ring[(head + count - 1) % MAX_HELD].id);
    mnl_socket_close(nl);
    return 0;
}
