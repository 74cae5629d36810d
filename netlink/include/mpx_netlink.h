// mpx_netlink: the only code that touches libmnl.
//
// Why this exists: the MPTCP path manager is configured over generic netlink (family
// "mptcp_pm") and follows interfaces over rtnetlink; both are byte-level protocols best
// spoken in C. This file gives Swift (Sources/MPTCPKernel) a small, flat surface: open a
// socket, send one command and get the kernel's answer (with its extended-ACK text), and
// parse received bytes into one flat record at a time. Every symbol is prefixed `mpx_`.
// Kernel values newer than the installed 6.1 headers are defined here as MPX_* copies and
// checked in mpx_netlink.c.
#ifndef MPX_NETLINK_H
#define MPX_NETLINK_H

#include <stddef.h>
#include <stdint.h>
#include "mpx_mptcp_kernel.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- mptcp_pm generic netlink (values from Linux 6.18 uapi linux/mptcp_pm.h) ---
#define MPX_PM_CMD_ADD_ADDR 1
#define MPX_PM_CMD_DEL_ADDR 2
#define MPX_PM_CMD_GET_ADDR 3
#define MPX_PM_CMD_FLUSH_ADDRS 4
#define MPX_PM_CMD_SET_LIMITS 5
#define MPX_PM_CMD_GET_LIMITS 6
#define MPX_PM_CMD_SET_FLAGS 7

#define MPX_PM_ADDR_FLAG_SIGNAL 0x01u
#define MPX_PM_ADDR_FLAG_SUBFLOW 0x02u
#define MPX_PM_ADDR_FLAG_BACKUP 0x04u
#define MPX_PM_ADDR_FLAG_FULLMESH 0x08u
#define MPX_PM_ADDR_FLAG_IMPLICIT 0x10u
#define MPX_PM_ADDR_FLAG_LAMINAR 0x20u  // new in 6.18

// Event types (genlmsghdr.cmd on the mptcp_pm_events group).
#define MPX_EVENT_CREATED 1
#define MPX_EVENT_ESTABLISHED 2
#define MPX_EVENT_CLOSED 3
#define MPX_EVENT_ANNOUNCED 6
#define MPX_EVENT_REMOVED 7
#define MPX_EVENT_SUB_ESTABLISHED 10
#define MPX_EVENT_SUB_CLOSED 11
#define MPX_EVENT_SUB_PRIORITY 13
#define MPX_EVENT_LISTENER_CREATED 15  // not in the 6.1 headers
#define MPX_EVENT_LISTENER_CLOSED 16   // not in the 6.1 headers

struct mpx_nl;  // one netlink socket (opaque)

struct mpx_nl_error {
    int code;            // positive errno, 0 if none
    char message[256];   // the kernel's extended-ACK text, or what failed on our side
};

// bus: NETLINK_GENERIC or NETLINK_ROUTE; groups: rtnetlink multicast group bitmask (0 for none).
struct mpx_nl *mpx_nl_open(int bus, unsigned int groups, struct mpx_nl_error *err);
void mpx_nl_close(struct mpx_nl *nl);
int mpx_nl_fd(const struct mpx_nl *nl);
// Receives one datagram (non-blocking with dontwait); returns bytes, 0 if none, -1 on error.
long mpx_nl_receive(struct mpx_nl *nl, void *buf, size_t len, int dontwait, struct mpx_nl_error *err);

// The mptcp_pm family and its event group, resolved at run time (ids are dynamic).
struct mpx_pm_family {
    uint16_t id;
    uint32_t events_group;
};
int mpx_pm_resolve(struct mpx_nl *nl, struct mpx_pm_family *out, struct mpx_nl_error *err);
int mpx_nl_join_group(struct mpx_nl *nl, uint32_t group, struct mpx_nl_error *err);

// One endpoint (MPTCP_PM_ATTR_ADDR nest).
struct mpx_pm_endpoint {
    uint8_t id;            // 0 = let the kernel choose (ADD) / not given
    uint8_t family;        // AF_INET or AF_INET6; 0 = not given
    uint8_t addr[16];      // network order; IPv4 in the first 4 bytes
    uint16_t port;         // host order
    uint32_t flags;        // MPX_PM_ADDR_FLAG_*
    int32_t ifindex;       // 0 = none
};

// Commands. Each sends one request with NLM_F_ACK and waits for the kernel's answer.
int mpx_pm_add_addr(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err);
int mpx_pm_del_addr(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err);
int mpx_pm_set_flags(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err);
int mpx_pm_flush(struct mpx_nl *nl, const struct mpx_pm_family *fam, struct mpx_nl_error *err);
int mpx_pm_set_limits(struct mpx_nl *nl, const struct mpx_pm_family *fam, uint32_t subflows, uint32_t add_addr_accepted, struct mpx_nl_error *err);
int mpx_pm_get_limits(struct mpx_nl *nl, const struct mpx_pm_family *fam, uint32_t *subflows, uint32_t *add_addr_accepted, struct mpx_nl_error *err);
// Starts a GET_ADDR dump; read the answer with mpx_nl_receive + mpx_nl_next until MPX_REC_DONE.
int mpx_pm_request_dump(struct mpx_nl *nl, const struct mpx_pm_family *fam, struct mpx_nl_error *err);

// --- rtnetlink ---
struct mpx_link {
    int32_t ifindex;
    char name[16];
    uint32_t flags;       // IFF_*
    uint8_t operstate;    // IF_OPER_*; 6 = up
    uint8_t deleted;      // RTM_DELLINK
};

struct mpx_ifaddr {
    int32_t ifindex;
    uint8_t family;
    uint8_t prefixlen;
    uint8_t scope;
    uint8_t deleted;      // RTM_DELADDR
    uint8_t addr[16];
    uint32_t flags;
};

// A route (RTM_NEWROUTE / RTM_DELROUTE): the fields the path manager learns gateways from.
struct mpx_route {
    int32_t oif;          // RTA_OIF; 0 if none (multipath routes have none)
    uint32_t table;       // RTA_TABLE, else rtm_table
    uint32_t priority;    // RTA_PRIORITY (the metric); 0 if absent
    uint8_t family;
    uint8_t dst_len;
    uint8_t type;         // RTN_*
    uint8_t deleted;      // RTM_DELROUTE
    uint8_t has_gateway;
    uint8_t gateway[16];  // RTA_GATEWAY
};

// Starts an RTM_GETLINK, RTM_GETADDR or RTM_GETROUTE dump (type is RTM_GET*).
int mpx_rt_request_dump(struct mpx_nl *nl, uint16_t type, struct mpx_nl_error *err);
// Adds or deletes a route `dst/dst_len [via gateway] dev oif [src prefsrc] table T`.
int mpx_rt_route(struct mpx_nl *nl, int add, uint32_t table, uint8_t family,
                 const uint8_t *dst, uint8_t dst_len, const uint8_t *gateway,
                 int32_t oif, const uint8_t *prefsrc, struct mpx_nl_error *err);
// `ip route get dst from src`: the interface the kernel would send by (*oif; 0 = none).
int mpx_rt_get_route(struct mpx_nl *nl, uint8_t family, const uint8_t *dst, const uint8_t *src,
                     int32_t *oif, struct mpx_nl_error *err);
// Adds or deletes a rule `from src/src_len lookup table priority P`.
int mpx_rt_rule(struct mpx_nl *nl, int add, uint32_t table, uint32_t priority, uint8_t family,
                const uint8_t *src, uint8_t src_len, struct mpx_nl_error *err);

// --- parsing: one flat record per netlink message ---
enum mpx_record_kind {
    MPX_REC_OTHER = 0,     // a message we do not interpret
    MPX_REC_LINK = 1,
    MPX_REC_ADDR = 2,
    MPX_REC_PM_EVENT = 3,
    MPX_REC_PM_ENDPOINT = 4,
    MPX_REC_DONE = 5,      // end of a dump
    MPX_REC_ACK = 6,       // NLMSG_ERROR with error 0
    MPX_REC_ERROR = 7,     // NLMSG_ERROR with an errno (and extended-ACK text)
    MPX_REC_MALFORMED = 8, // the bytes are not a valid message; `error.message` says why
    MPX_REC_PM_LIMITS = 9, // GET_LIMITS reply
    MPX_REC_DIAG_SOCKET = 10, // one socket of a sock_diag dump
    MPX_REC_ROUTE = 11,    // RTM_NEWROUTE / RTM_DELROUTE (dumps, changes, and the answer to mpx_rt_get_route)
};

// Attribute presence bits of struct mpx_pm_event.present.
#define MPX_EV_HAS_TOKEN 0x1u
#define MPX_EV_HAS_SADDR 0x2u
#define MPX_EV_HAS_DADDR 0x4u
#define MPX_EV_HAS_PORTS 0x8u
#define MPX_EV_HAS_IDS 0x10u
#define MPX_EV_HAS_BACKUP 0x20u
#define MPX_EV_HAS_IFINDEX 0x40u
#define MPX_EV_HAS_ERROR 0x80u

struct mpx_pm_event {
    uint8_t type;          // MPX_EVENT_*
    uint8_t family;
    uint8_t loc_id, rem_id;
    uint8_t backup;
    uint8_t error;
    uint16_t sport, dport; // host order (converted from the event's network order)
    uint32_t token;
    int32_t ifindex;
    uint32_t present;      // MPX_EV_HAS_*
    uint8_t saddr[16], daddr[16];
};

// --- sock_diag (NETLINK_SOCK_DIAG): MPTCP connections and their TCP subflows ---
#define MPX_DIAG_PROTOCOL_MPTCP 262  // IPPROTO_MPTCP

// One socket of an inet_diag dump, flattened. The tcp_info and mptcp_info fields are
// valid when has_tcp_info / has_mptcp_info; the subflow fields when is_subflow (a TCP
// socket whose ULP is "mptcp").
struct mpx_diag_socket {
    uint8_t family;
    uint8_t state;           // TCP_* state numbers (MPTCP sockets use the same)
    uint8_t has_tcp_info;
    uint8_t has_mptcp_info;
    uint8_t is_subflow;
    uint8_t subflow_id_loc, subflow_id_rem;
    uint8_t ca_state;
    uint16_t sport, dport;   // host order
    uint32_t ifindex;        // bound device (idiag_if), 0 = not bound
    uint32_t uid, inode;
    uint64_t cookie;         // the kernel's socket cookie: stable identity between samples
    uint8_t src[16], dst[16];
    uint32_t token_loc, token_rem, subflow_flags;
    // struct tcp_info, the fields the monitor shows
    uint32_t rtt_us, rttvar_us, snd_cwnd, snd_mss, unacked, lost, retrans, total_retrans;
    uint32_t segs_out, segs_in;
    uint32_t rto_us;         // the retransmission timeout now (path health: how long a stall may last)
    uint64_t bytes_acked, bytes_received, bytes_sent, bytes_retrans, delivery_rate;
    struct mpx_mptcp_info mptcp;
};

struct mpx_nl_record {
    int kind;              // enum mpx_record_kind
    uint32_t seq;
    struct mpx_diag_socket diag;
    struct mpx_link link;
    struct mpx_ifaddr addr;
    struct mpx_pm_event event;
    struct mpx_pm_endpoint endpoint;
    uint32_t limit_subflows, limit_add_addr_accepted;
    struct mpx_route route;
    struct mpx_nl_error error;
};

// Parses the message at *offset in buf[0..len) and advances *offset past it. Returns 1 when
// a record was produced, 0 at the end of the buffer. pm_family_id: the resolved mptcp_pm id
// (0 if unknown) so generic netlink messages of that family can be recognised.
int mpx_nl_next(const void *buf, size_t len, size_t *offset, uint16_t pm_family_id, struct mpx_nl_record *out);

// Starts a sock_diag dump of `protocol` (6 = TCP, MPX_DIAG_PROTOCOL_MPTCP) sockets of `family`
// (AF_INET/AF_INET6) in every state but TIME_WAIT and SYN_RECV, with tcp_info/mptcp_info
// and the MPTCP subflow ULP attributes. Returns the sequence number, or -1.
int mpx_diag_request_dump(struct mpx_nl *nl, uint8_t family, uint32_t protocol, struct mpx_nl_error *err);
// One TCP socket named by its 4-tuple and bound device, for an exact sock_diag lookup.
// Addresses in network order (4 bytes used for AF_INET), ports in host order.
struct mpx_diag_key {
    uint8_t family;
    uint16_t sport, dport;
    uint32_t ifindex;
    uint8_t src[16], dst[16];
};
// Sends one exact lookup (no NLM_F_DUMP) per key, with INET_DIAG_INFO, all in one datagram:
// the kernel answers each with one message, or an NLMSG_ERROR (ENOENT: gone). The requests
// carry the sequence numbers *first_seq, *first_seq + 1, ... (wrapping); returns 0, or -1.
// At most MPX_DIAG_LOOKUP_BATCH keys.
#define MPX_DIAG_LOOKUP_BATCH 64
int mpx_diag_request_lookups(struct mpx_nl *nl, const struct mpx_diag_key *keys, size_t count, uint32_t *first_seq, struct mpx_nl_error *err);
// Like mpx_nl_next for a sock_diag socket (whose message types overlap rtnetlink's);
// `protocol` is the one dumped (INET_DIAG_INFO is tcp_info or mptcp_info by protocol).
int mpx_diag_next(const void *buf, size_t len, size_t *offset, uint32_t protocol, struct mpx_nl_record *out);

#ifdef __cplusplus
}
#endif
#endif
