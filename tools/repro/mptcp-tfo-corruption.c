// docs/decisions/0007: MPTCP with TCP Fast Open misplaces stream bytes written soon after the
// SYN data. No proxy involved: each client connection sends 212 bytes in its SYN
// (TCP_FASTOPEN_CONNECT), waits for the server's 8-byte reply, then writes UPLOAD bytes in
// WRITE-byte send(2) calls and half-closes; the server checks every byte against the
// position-dependent pattern and answers one byte: 'k' (intact) or 'X' (first bad offset
// printed), or nothing when the stream never ends (the client gives up after 10 s: "failed").
// THREADS connections run at once, CONNECTIONS in all.
//
//   server ADDR PORT
//   client ADDR PORT CONNECTIONS THREADS WRITE UPLOAD [nofastopen]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/mptcp.h>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif
#ifndef TCP_FASTOPEN_CONNECT
#define TCP_FASTOPEN_CONNECT 30
#endif

enum { HEAD = 212, REPLY = 8 };

static uint8_t pattern(uint32_t id, uint64_t offset) {
    uint64_t x = (offset >> 2) * 0x9E3779B97F4A7C15ull ^ (uint64_t)id * 0xD1B54A32D192ED03ull;
    return (uint8_t)(x >> (8 * (offset & 3) + 24));
}

static int read_full(int fd, uint8_t *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const uint8_t *buf, size_t len) {
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        sent += (size_t)n;
    }
    return 0;
}

static struct sockaddr_in address(const char *host, const char *port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    return sa;
}

// ---- server ----

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    uint8_t head[HEAD], buf[65536];
    if (read_full(fd, head, HEAD) != 0) { close(fd); return NULL; }
    uint32_t id;
    memcpy(&id, head, 4);
    uint64_t offset = HEAD, first_bad = UINT64_MAX;
    for (uint64_t i = 4; i < HEAD; i++) if (head[i] != pattern(id, i) && first_bad == UINT64_MAX) first_bad = i;
    uint8_t reply[REPLY] = {1, 2, 3, 4, 5, 6, 7, 8};
    write_full(fd, reply, REPLY);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(id, offset + (uint64_t)i) && first_bad == UINT64_MAX) first_bad = offset + (uint64_t)i;
        offset += (uint64_t)n;
    }
    uint8_t verdict = first_bad == UINT64_MAX ? 'k' : 'X';
    if (verdict == 'X') {
        struct sockaddr_in peer;
        socklen_t length = sizeof peer;
        getpeername(fd, (struct sockaddr *)&peer, &length);
        fprintf(stderr, "connection %u from port %u: %llu bytes, first wrong byte at offset %llu\n", id, ntohs(peer.sin_port),
                (unsigned long long)offset, (unsigned long long)first_bad);
    }
    write_full(fd, &verdict, 1);
    close(fd);
    return NULL;
}

static int server(const char *host, const char *port) {
    int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP), one = 1, queue = 4096;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!getenv("REPRO_SERVER_NO_FASTOPEN")) setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN, &queue, sizeof queue);
    struct sockaddr_in sa = address(host, port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) { perror("listen"); return 1; }
    for (;;) {
        int client = accept(fd, NULL, NULL);
        if (client < 0) continue;
        pthread_t thread;
        pthread_create(&thread, NULL, serve, (void *)(intptr_t)client);
        pthread_detach(thread);
    }
}

// ---- client ----

static struct sockaddr_in target;
static int connections, write_size, upload, fastopen = 1;
// Experiments (environment): REPRO_DELAY_US waits after the reply; REPRO_FIRST makes the first
// write after it that many bytes; REPRO_WAIT_SUBFLOWS=N waits (up to 0.1 s) until MPTCP_INFO
// counts N subflows (its count leaves out the first); REPRO_SERVER_NO_FASTOPEN makes the
// server's listener refuse SYN data (the client resends it after the handshake).
static int delay_us, first_write, wait_subflows;
static atomic_int next_id, intact, corrupted, failed;

static void *run(void *unused) {
    (void)unused;
    uint8_t *data = malloc((size_t)upload + HEAD);
    for (;;) {
        int id = atomic_fetch_add(&next_id, 1);
        if (id >= connections) break;
        for (uint64_t i = 0; i < (uint64_t)upload + HEAD; i++) data[i] = pattern((uint32_t)id, i);
        memcpy(data, &id, 4);
        int fd = socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP), one = 1;
        if (fastopen) setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one);
        // A stream that lost bytes may never see its end: give up after 10 s ("failed").
        struct timeval limit = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
        uint8_t reply[REPLY], verdict = 0;
        int ok = connect(fd, (struct sockaddr *)&target, sizeof target) == 0
            && write_full(fd, data, HEAD) == 0 && read_full(fd, reply, REPLY) == 0;
        if (ok && delay_us > 0) usleep((useconds_t)delay_us);
        for (int waited = 0; ok && wait_subflows > 0 && waited < 1000; waited++) {
            struct mptcp_info info = {0};
            socklen_t length = sizeof info;
            if (getsockopt(fd, SOL_MPTCP, MPTCP_INFO, &info, &length) != 0 || info.mptcpi_subflows + 1 >= wait_subflows) break;
            usleep(100);
        }
        for (int sent = 0, chunk = 0; ok && sent < upload; sent += chunk) {
            chunk = upload - sent < write_size ? upload - sent : write_size;
            if (sent == 0 && first_write > 0 && first_write < chunk) chunk = first_write;
            ok = write_full(fd, data + HEAD + sent, (size_t)chunk) == 0;
        }
        if (ok) { shutdown(fd, SHUT_WR); ok = read_full(fd, &verdict, 1) == 0; }
        if (!ok) atomic_fetch_add(&failed, 1);
        else if (verdict == 'k') atomic_fetch_add(&intact, 1);
        else atomic_fetch_add(&corrupted, 1);
        close(fd);
    }
    free(data);
    return NULL;
}

static int client(char **argv, int argc) {
    target = address(argv[2], argv[3]);
    connections = atoi(argv[4]);
    int threads = atoi(argv[5]);
    write_size = atoi(argv[6]);
    upload = atoi(argv[7]);
    if (argc > 8 && strcmp(argv[8], "nofastopen") == 0) fastopen = 0;
    if (getenv("REPRO_DELAY_US")) delay_us = atoi(getenv("REPRO_DELAY_US"));
    if (getenv("REPRO_FIRST")) first_write = atoi(getenv("REPRO_FIRST"));
    if (getenv("REPRO_WAIT_SUBFLOWS")) wait_subflows = atoi(getenv("REPRO_WAIT_SUBFLOWS"));
    pthread_t *all = calloc((size_t)threads, sizeof *all);
    for (int i = 0; i < threads; i++) pthread_create(&all[i], NULL, run, NULL);
    for (int i = 0; i < threads; i++) pthread_join(all[i], NULL);
    printf("%d connections (fast open %s, %d at once, %d-byte writes of %d): %d intact, %d corrupted, %d failed\n",
           connections, fastopen ? "on" : "off", threads, write_size, upload, intact, corrupted, failed);
    return corrupted > 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "server") == 0) return server(argv[2], argv[3]);
    if (argc >= 8 && strcmp(argv[1], "client") == 0) return client(argv, argc);
    fprintf(stderr, "usage: %s server ADDR PORT | client ADDR PORT CONNECTIONS THREADS WRITE UPLOAD [nofastopen]\n", argv[0]);
    return 2;
}
