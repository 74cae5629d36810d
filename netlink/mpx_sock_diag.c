// sock_diag: the kernel's list of MPTCP connections (protocol 262) and of TCP sockets, of
// which the MPTCP subflows are those whose ULP is "mptcp". Facts used (verified on 6.18,
// shared/reference/kernel-mptcp.md §4): the u8 sdiag_protocol cannot hold 262, so MPTCP
// dumps send 0 there plus INET_DIAG_REQ_PROTOCOL; MPTCP sockets answer with INET_DIAG_INFO
// = struct mptcp_info; subflows nest MPTCP_SUBFLOW_ATTR_* in INET_DIAG_ULP_INFO.
#define _GNU_SOURCE
#include "mpx_netlink.h"
#include "mpx_netlink_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>

// Our copies (values unchanged since they were introduced; the 6.1 headers have them, but
// this file must not depend on which header version is installed).
enum { MPX_INET_DIAG_INFO = 2, MPX_INET_DIAG_REQ_PROTOCOL = 3, MPX_INET_DIAG_ULP_INFO = 19 };
enum { MPX_INET_ULP_INFO_NAME = 1, MPX_INET_ULP_INFO_MPTCP = 3 };
enum {
    MPX_SUBFLOW_ATTR_TOKEN_REM = 1, MPX_SUBFLOW_ATTR_TOKEN_LOC = 2, MPX_SUBFLOW_ATTR_FLAGS = 8,
    MPX_SUBFLOW_ATTR_ID_REM = 9, MPX_SUBFLOW_ATTR_ID_LOC = 10, MPX_SUBFLOW_ATTR_MAX = 11,
};
#define MPX_TCP_TIME_WAIT 6
#define MPX_TCP_NEW_SYN_RECV 12

_Static_assert(sizeof(struct inet_diag_req_v2) == 56, "inet_diag_req_v2 is 56 bytes");
_Static_assert(sizeof(struct inet_diag_msg) == 72, "inet_diag_msg is 72 bytes");
_Static_assert(offsetof(struct tcp_info, tcpi_bytes_acked) == 120, "tcpi_bytes_acked @120");
_Static_assert(offsetof(struct tcp_info, tcpi_bytes_retrans) == 208, "tcpi_bytes_retrans @208 (same prefix on 6.18)");

int mpx_diag_request_dump(struct mpx_nl *nl, uint8_t family, uint32_t protocol, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP);
    struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof *req);
    req->sdiag_family = family;
    req->idiag_ext = 1u << (MPX_INET_DIAG_INFO - 1);
    req->idiag_states = ~((1u << MPX_TCP_TIME_WAIT) | (1u << MPX_TCP_NEW_SYN_RECV));
    if (protocol <= 255) {
        req->sdiag_protocol = (uint8_t)protocol;
    } else {
        req->sdiag_protocol = 0;
        mnl_attr_put_u32(nlh, MPX_INET_DIAG_REQ_PROTOCOL, protocol);
    }
    if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) { mpx_set_errno(err, "sendto(sock_diag dump)"); return -1; }
    return (int)nlh->nlmsg_seq;
}

int mpx_diag_request_lookups(struct mpx_nl *nl, const struct mpx_diag_key *keys, size_t count, uint32_t *first_seq, struct mpx_nl_error *err) {
    // Each request is a header and an inet_diag_req_v2, no attributes: 72 bytes.
    enum { REQUEST = NLMSG_ALIGN(NLMSG_HDRLEN + sizeof(struct inet_diag_req_v2)) };
    char buf[REQUEST * MPX_DIAG_LOOKUP_BATCH];
    if (count == 0 || count > MPX_DIAG_LOOKUP_BATCH) { mpx_set_error(err, EINVAL, "sock_diag lookup: 1 to 64 keys"); return -1; }
    memset(buf, 0, REQUEST * count);
    *first_seq = nl->seq + 1;
    for (size_t i = 0; i < count; i++) {
        const struct mpx_diag_key *key = &keys[i];
        struct nlmsghdr *nlh = mpx_request_header(nl, buf + REQUEST * i, SOCK_DIAG_BY_FAMILY, 0);
        struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof *req);
        req->sdiag_family = key->family;
        req->sdiag_protocol = IPPROTO_TCP;
        req->idiag_ext = 1u << (MPX_INET_DIAG_INFO - 1);
        req->idiag_states = ~0u;
        req->id.idiag_sport = htons(key->sport);
        req->id.idiag_dport = htons(key->dport);
        size_t alen = key->family == AF_INET ? 4 : 16;
        memcpy(req->id.idiag_src, key->src, alen);
        memcpy(req->id.idiag_dst, key->dst, alen);
        // The kernel matches a socket bound to a device only when asked for that device.
        req->id.idiag_if = key->ifindex;
        // INET_DIAG_NOCOOKIE: whichever socket has the 4-tuple now; its cookie is in the answer.
        req->id.idiag_cookie[0] = req->id.idiag_cookie[1] = ~0u;
    }
    if (mnl_socket_sendto(nl->sock, buf, REQUEST * count) < 0) { mpx_set_errno(err, "sendto(sock_diag lookups)"); return -1; }
    return 0;
}

// Copies min(payload, size) bytes: a newer kernel sends longer structs, an older shorter.
static void copy_struct(const struct nlattr *a, void *out, size_t size) {
    size_t len = mnl_attr_get_payload_len(a);
    memset(out, 0, size);
    memcpy(out, mnl_attr_get_payload(a), len < size ? len : size);
}

static void parse_tcp_info(const struct nlattr *a, struct mpx_diag_socket *s) {
    struct tcp_info ti;
    copy_struct(a, &ti, sizeof ti);
    s->has_tcp_info = 1;
    s->ca_state = ti.tcpi_ca_state;
    s->rtt_us = ti.tcpi_rtt;
    s->rttvar_us = ti.tcpi_rttvar;
    s->snd_cwnd = ti.tcpi_snd_cwnd;
    s->snd_mss = ti.tcpi_snd_mss;
    s->unacked = ti.tcpi_unacked;
    s->lost = ti.tcpi_lost;
    s->retrans = ti.tcpi_retrans;
    s->total_retrans = ti.tcpi_total_retrans;
    s->segs_out = ti.tcpi_segs_out;
    s->segs_in = ti.tcpi_segs_in;
    s->rto_us = ti.tcpi_rto;
    s->bytes_acked = ti.tcpi_bytes_acked;
    s->bytes_received = ti.tcpi_bytes_received;
    s->bytes_sent = ti.tcpi_bytes_sent;
    s->bytes_retrans = ti.tcpi_bytes_retrans;
    s->delivery_rate = ti.tcpi_delivery_rate;
}

// INET_DIAG_ULP_INFO: a subflow when its name is "mptcp"; tokens, ids and flags nested.
static int parse_ulp(const struct nlattr *ulp, struct mpx_diag_socket *s) {
    struct attr_table t, sf;
    if (mpx_parse_nested(ulp, &t, MPX_INET_ULP_INFO_MPTCP) < 0) return -1;
    const struct nlattr *name = t.at[MPX_INET_ULP_INFO_NAME];
    if (!name || mnl_attr_validate(name, MNL_TYPE_NUL_STRING) < 0) return -1;
    if (strcmp(mnl_attr_get_str(name), "mptcp") != 0) return 0;  // another ULP (tls)
    if (!t.at[MPX_INET_ULP_INFO_MPTCP]) return -1;
    if (mpx_parse_nested(t.at[MPX_INET_ULP_INFO_MPTCP], &sf, MPX_SUBFLOW_ATTR_MAX) < 0) return -1;
    // Required: the local token is what ties a subflow to its connection.
    if (!mpx_attr_u32(sf.at[MPX_SUBFLOW_ATTR_TOKEN_LOC], &s->token_loc)) return -1;
    mpx_attr_u32(sf.at[MPX_SUBFLOW_ATTR_TOKEN_REM], &s->token_rem);
    mpx_attr_u32(sf.at[MPX_SUBFLOW_ATTR_FLAGS], &s->subflow_flags);
    mpx_attr_u8(sf.at[MPX_SUBFLOW_ATTR_ID_LOC], &s->subflow_id_loc);
    mpx_attr_u8(sf.at[MPX_SUBFLOW_ATTR_ID_REM], &s->subflow_id_rem);
    s->is_subflow = 1;
    return 0;
}

int mpx_diag_next(const void *buf, size_t len, size_t *offset, uint32_t protocol, struct mpx_nl_record *out) {
    int result;
    const struct nlmsghdr *nlh = mpx_take_message(buf, len, offset, out, &result);
    if (!nlh) return result;
    if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY) { out->kind = MPX_REC_OTHER; return 1; }

    const struct inet_diag_msg *msg = mnl_nlmsg_get_payload(nlh);
    if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *msg) { mpx_malformed(out, "truncated inet_diag_msg"); return 1; }
    if (msg->idiag_family != AF_INET && msg->idiag_family != AF_INET6) { mpx_malformed(out, "inet_diag_msg: unknown address family"); return 1; }
    struct attr_table t;
    if (mpx_parse_attrs(nlh, sizeof *msg, &t, MPX_INET_DIAG_ULP_INFO) < 0) { mpx_malformed(out, "inet_diag_msg: bad attributes"); return 1; }
    struct mpx_diag_socket *s = &out->diag;
    out->kind = MPX_REC_DIAG_SOCKET;
    s->family = msg->idiag_family;
    s->state = msg->idiag_state;
    s->sport = ntohs(msg->id.idiag_sport);
    s->dport = ntohs(msg->id.idiag_dport);
    size_t alen = msg->idiag_family == AF_INET ? 4 : 16;
    memcpy(s->src, msg->id.idiag_src, alen);
    memcpy(s->dst, msg->id.idiag_dst, alen);
    s->ifindex = msg->id.idiag_if;
    s->cookie = (uint64_t)msg->id.idiag_cookie[0] | ((uint64_t)msg->id.idiag_cookie[1] << 32);
    s->uid = msg->idiag_uid;
    s->inode = msg->idiag_inode;
    const struct nlattr *info = t.at[MPX_INET_DIAG_INFO];
    // One attribute type, two structs: which one depends on the protocol dumped.
    if (info && protocol == MPX_DIAG_PROTOCOL_MPTCP) {
        copy_struct(info, &s->mptcp, sizeof s->mptcp);
        s->has_mptcp_info = 1;
    } else if (info) {
        parse_tcp_info(info, s);
    }
    if (t.at[MPX_INET_DIAG_ULP_INFO] && parse_ulp(t.at[MPX_INET_DIAG_ULP_INFO], s) < 0)
        mpx_malformed(out, "INET_DIAG_ULP_INFO: mptcp subflow without a valid token");
    return 1;
}
