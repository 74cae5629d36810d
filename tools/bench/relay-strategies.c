// Ways of moving bytes between an MPTCP socket and a TCP socket, side by side, for the
// decision on the relay's data path (issue 12, docs/decisions/0018). Not the product: a
// deliberately small relay (one thread per direction, blocking calls) whose only variable is
// the system calls that carry the bytes, so that tools/bench/relay-strategies can read each
// strategy's CPU per GB from the kernel's accounting. User time is negligible in all of them
// (mptcp-proxy: 0.002-0.006 s/GB); what differs is the kernel's work.
//
//   splice           source → pipe → destination; an MPTCP source is read in splices sized
//                    by FIONREAD after poll (what mptcp-proxy does).
//   splice-unsized   the same, each splice asking for the pipe's whole room.
//   copy             recv(2) into a user buffer, send(2) it.
//   copy-from-mptcp  copy where the source is MPTCP, splice the other way.
//
// --lowat N sets SO_RCVLOWAT on the MPTCP socket: poll then wakes for N bytes or EOF, so a
// message shorter than N (a request, the sink's 24-byte report) would wait for ever; a sized
// splice waits at most 1 ms for the mark, then takes what is queued (a relay would need that
// timer too: without it this strategy hung on its first exchange).
// Usage: relay-strategies --listen IP:PORT [--listen-mptcp] --to IP:PORT [--to-mptcp]
//                         --mode MODE [--pipe BYTES] [--buffer BYTES] [--lowat BYTES]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

enum mode { SPLICE, SPLICE_UNSIZED, COPY, COPY_FROM_MPTCP };
static enum mode mode = SPLICE;
static int pipe_size = 1 << 20, buffer_size = 1 << 20, lowat = 0;
static struct sockaddr_in target;
static int target_mptcp = 0, listen_mptcp = 0;

struct direction {
    int from, to;
    int from_mptcp;
    pthread_mutex_t *lock;
    int *running;   // directions of the pair still running; the last one closes both
};

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int parse(const char *text, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || colon - text >= (long)sizeof host) return -1;
    memcpy(host, text, colon - text);
    host[colon - text] = 0;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

// Waits until the source is readable: what an epoll loop would learn before reading. With a
// low-water mark, until the mark is reached or 1 ms passes with something queued.
static int wait_readable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int ready = poll(&p, 1, lowat > 0 ? 1 : -1);
        if (ready < 0 && errno != EINTR) return -1;
        if (ready > 0) return 0;
        int queued = 0;
        if (ready == 0 && ioctl(fd, FIONREAD, &queued) == 0 && queued > 0) return 0;
    }
}

static int write_all(int fd, const char *data, ssize_t length) {
    while (length > 0) {
        ssize_t n = send(fd, data, (size_t)length, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += n;
        length -= n;
    }
    return 0;
}

static void copy_loop(struct direction *d) {
    char *buffer = malloc((size_t)buffer_size);
    if (!buffer) die("malloc");
    for (;;) {
        ssize_t n = recv(d->from, buffer, (size_t)buffer_size, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || write_all(d->to, buffer, n) < 0) break;
    }
    free(buffer);
}

static void splice_loop(struct direction *d, int sized) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) die("pipe2");
    int room = fcntl(p[1], F_SETPIPE_SZ, pipe_size);
    if (room < 0) room = 65536;
    for (;;) {
        size_t ask = (size_t)room;
        if (sized) {
            if (wait_readable(d->from) < 0) break;
            int queued = 0;
            if (ioctl(d->from, FIONREAD, &queued) == 0 && queued > 0 && queued < room) ask = (size_t)queued;
        }
        ssize_t n = splice(d->from, NULL, p[1], NULL, ask, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        while (n > 0) {
            ssize_t m = splice(p[0], NULL, d->to, NULL, (size_t)n, SPLICE_F_MOVE | SPLICE_F_MORE);
            if (m < 0 && errno == EINTR) continue;
            if (m <= 0) goto done;
            n -= m;
        }
    }
done:
    close(p[0]);
    close(p[1]);
}

static void *run_direction(void *argument) {
    struct direction *d = argument;
    int copies = mode == COPY || (mode == COPY_FROM_MPTCP && d->from_mptcp);
    if (copies) copy_loop(d);
    else splice_loop(d, mode == SPLICE || (mode == COPY_FROM_MPTCP && d->from_mptcp));
    shutdown(d->to, SHUT_WR);
    pthread_mutex_lock(d->lock);
    int last = --*d->running == 0;
    pthread_mutex_unlock(d->lock);
    if (last) {
        close(d->from);
        close(d->to);
        free(d->lock);
        free(d->running);
    }
    free(d);
    return NULL;
}

static void start(int from, int to, int from_mptcp, pthread_mutex_t *lock, int *running) {
    struct direction *d = malloc(sizeof *d);
    if (!d) die("malloc");
    *d = (struct direction){.from = from, .to = to, .from_mptcp = from_mptcp, .lock = lock, .running = running};
    pthread_t thread;
    if (pthread_create(&thread, NULL, run_direction, d) != 0) die("pthread_create");
    pthread_detach(thread);
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_at;
    int have_listen = 0, have_target = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--listen") && v) { have_listen = parse(v, &listen_at) == 0; i++; }
        else if (!strcmp(a, "--to") && v) { have_target = parse(v, &target) == 0; i++; }
        else if (!strcmp(a, "--listen-mptcp")) listen_mptcp = 1;
        else if (!strcmp(a, "--to-mptcp")) target_mptcp = 1;
        else if (!strcmp(a, "--pipe") && v) { pipe_size = atoi(v); i++; }
        else if (!strcmp(a, "--buffer") && v) { buffer_size = atoi(v); i++; }
        else if (!strcmp(a, "--lowat") && v) { lowat = atoi(v); i++; }
        else if (!strcmp(a, "--mode") && v) {
            i++;
            if (!strcmp(v, "splice")) mode = SPLICE;
            else if (!strcmp(v, "splice-unsized")) mode = SPLICE_UNSIZED;
            else if (!strcmp(v, "copy")) mode = COPY;
            else if (!strcmp(v, "copy-from-mptcp")) mode = COPY_FROM_MPTCP;
            else { fprintf(stderr, "unknown mode %s\n", v); return 2; }
        } else { fprintf(stderr, "unknown argument %s\n", a); return 2; }
    }
    if (!have_listen || !have_target || pipe_size <= 0 || buffer_size <= 0 || lowat < 0) {
        fprintf(stderr, "usage: relay-strategies --listen IP:PORT [--listen-mptcp] --to IP:PORT [--to-mptcp] --mode MODE\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM, listen_mptcp ? IPPROTO_MPTCP : 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&listen_at, sizeof listen_at) < 0) die("bind");
    if (listen(listener, 64) < 0) die("listen");
    for (;;) {
        int accepted = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (accepted < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        int onward = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, target_mptcp ? IPPROTO_MPTCP : 0);
        if (onward < 0 || connect(onward, (struct sockaddr *)&target, sizeof target) < 0) {
            perror("connect");
            close(accepted);
            if (onward >= 0) close(onward);
            continue;
        }
        setsockopt(accepted, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(onward, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int mptcp_side = listen_mptcp ? accepted : target_mptcp ? onward : -1;
        if (lowat > 0 && mptcp_side >= 0 && setsockopt(mptcp_side, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) < 0)
            perror("SO_RCVLOWAT");
        pthread_mutex_t *lock = malloc(sizeof *lock);
        int *running = malloc(sizeof *running);
        if (!lock || !running) die("malloc");
        pthread_mutex_init(lock, NULL);
        *running = 2;
        start(accepted, onward, listen_mptcp, lock, running);
        start(onward, accepted, target_mptcp, lock, running);
    }
}
