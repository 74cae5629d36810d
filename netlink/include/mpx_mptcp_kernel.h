// Kernel MPTCP definitions newer than the installed headers.
//
// Why this exists: Debian bookworm ships linux-libc-dev 6.1, whose struct mptcp_info
// stops at mptcpi_csum_enabled (48 bytes) and which lacks MPTCP_FULL_INFO, the
// listener events and the LAMINAR flag; the kernel we run is 6.18, whose struct is
// 96 bytes. We keep our own copies, prefixed `mpx_`/`MPX_` so they never collide
// with a system header, and netlink/mpx_mptcp_kernel.c checks every size and
// offset we rely on with _Static_assert. Layouts: shared/reference/kernel-mptcp.md §3.1.
#ifndef MPX_MPTCP_KERNEL_H
#define MPX_MPTCP_KERNEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Socket options at SOL_MPTCP (284).
#define MPX_MPTCP_INFO 1
#define MPX_MPTCP_TCPINFO 2
#define MPX_MPTCP_SUBFLOW_ADDRS 3
#define MPX_MPTCP_FULL_INFO 4

// mptcp_info.mptcpi_flags bits.
#define MPX_MPTCP_INFO_FLAG_FALLBACK 0x1u
#define MPX_MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED 0x2u

// struct mptcp_info as of Linux 6.18 (96 bytes).
struct mpx_mptcp_info {
    uint8_t mptcpi_subflows;          // extra subflows only; use subflows_total
    uint8_t mptcpi_add_addr_signal;
    uint8_t mptcpi_add_addr_accepted;
    uint8_t mptcpi_subflows_max;
    uint8_t mptcpi_add_addr_signal_max;
    uint8_t mptcpi_add_addr_accepted_max;
    uint32_t mptcpi_flags;
    uint32_t mptcpi_token;
    uint64_t mptcpi_write_seq;
    uint64_t mptcpi_snd_una;
    uint64_t mptcpi_rcv_nxt;
    uint8_t mptcpi_local_addr_used;
    uint8_t mptcpi_local_addr_max;
    uint8_t mptcpi_csum_enabled;
    uint32_t mptcpi_retransmits;
    uint64_t mptcpi_bytes_retrans;
    uint64_t mptcpi_bytes_sent;
    uint64_t mptcpi_bytes_received;
    uint64_t mptcpi_bytes_acked;
    uint8_t mptcpi_subflows_total;
    uint8_t mptcpi_endp_laminar_max;
    uint8_t reserved[2];
    uint32_t mptcpi_last_data_sent;
    uint32_t mptcpi_last_data_recv;
    uint32_t mptcpi_last_ack_recv;
};

// Header of the MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS array sockopts (16 bytes).
struct mpx_mptcp_subflow_data {
    uint32_t size_subflow_data;  // in: sizeof(struct mpx_mptcp_subflow_data)
    uint32_t num_subflows;       // out
    uint32_t size_kernel;        // out
    uint32_t size_user;          // in: size of one array element we can take
} __attribute__((aligned(8)));

// One subflow of an MPTCP socket as MPTCP_TCPINFO reports it: what the proxy needs to know
// whether a join is still under way (see Sources/Proxy/Connection/HalfCloseHold.swift).
struct mpx_subflow_handshake {
    uint8_t tcp_state;   // TCP_ESTABLISHED = 1, TCP_SYN_SENT = 2, ... (linux/tcp_states.h)
    uint32_t rtt_us;     // tcpi_rtt: smoothed RTT, from the SYN/SYN-ACK for a fresh subflow
};

// Fills up to `max` entries for `fd`'s subflows (getsockopt MPTCP_TCPINFO) and returns how many
// it filled, or -1 with errno set (EOPNOTSUPP for a socket that fell back to TCP).
int mpx_mptcp_subflow_handshakes(int fd, struct mpx_subflow_handshake *out, int max);

// The local address of one subflow (MPTCP_SUBFLOW_ADDRS): AF_INET or AF_INET6, and the
// address in network order (IPv4 in the first 4 bytes).
struct mpx_subflow_local {
    uint16_t family;
    uint8_t address[16];
};

// Fills up to `max` entries with the local addresses of `fd`'s subflows and returns how many it
// filled, or -1 with errno set (EOPNOTSUPP for a socket that fell back to TCP).
int mpx_mptcp_subflow_locals(int fd, struct mpx_subflow_local *out, int max);

#ifdef __cplusplus
}
#endif
#endif
