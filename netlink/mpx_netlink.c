// See include/mpx_netlink.h for why this exists. Layout of every message we build follows
// shared/reference/kernel-mptcp.md (attributes verified on Linux 6.18).
#define _GNU_SOURCE
#include "mpx_netlink.h"
#include "mpx_netlink_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

// mptcp_pm attribute ids (6.18 uapi; the same values exist in 6.1's linux/mptcp.h, but we
// keep our own copies so this file builds against any header).
enum {
    MPX_PM_ATTR_ADDR = 1, MPX_PM_ATTR_RCV_ADD_ADDRS = 2, MPX_PM_ATTR_SUBFLOWS = 3,
};
enum {
    MPX_PM_ADDR_ATTR_FAMILY = 1, MPX_PM_ADDR_ATTR_ID = 2, MPX_PM_ADDR_ATTR_ADDR4 = 3,
    MPX_PM_ADDR_ATTR_ADDR6 = 4, MPX_PM_ADDR_ATTR_PORT = 5, MPX_PM_ADDR_ATTR_FLAGS = 6,
    MPX_PM_ADDR_ATTR_IF_IDX = 7, MPX_PM_ADDR_ATTR_MAX = 7,
};
enum {
    MPX_ATTR_TOKEN = 1, MPX_ATTR_FAMILY = 2, MPX_ATTR_LOC_ID = 3, MPX_ATTR_REM_ID = 4,
    MPX_ATTR_SADDR4 = 5, MPX_ATTR_SADDR6 = 6, MPX_ATTR_DADDR4 = 7, MPX_ATTR_DADDR6 = 8,
    MPX_ATTR_SPORT = 9, MPX_ATTR_DPORT = 10, MPX_ATTR_BACKUP = 11, MPX_ATTR_ERROR = 12,
    MPX_ATTR_FLAGS = 13, MPX_ATTR_TIMEOUT = 14, MPX_ATTR_IF_IDX = 15,
    MPX_ATTR_RESET_REASON = 16, MPX_ATTR_RESET_FLAGS = 17, MPX_ATTR_SERVER_SIDE = 18,
    MPX_ATTR_MAX = 18,
};
#define MPX_PM_VERSION 1
#define MPX_NETLINK_EXT_ACK 11
#define MPX_NETLINK_CAP_ACK 10
#define MPX_NLMSGERR_ATTR_MSG 1

_Static_assert(sizeof(struct mpx_pm_endpoint) == 28, "mpx_pm_endpoint layout");
_Static_assert(MPX_PM_ADDR_FLAG_LAMINAR == 0x20, "LAMINAR is 0x20 on 6.18");
_Static_assert(sizeof(struct genlmsghdr) == 4, "genlmsghdr is 4 bytes");
_Static_assert(sizeof(struct fib_rule_hdr) == 12, "fib_rule_hdr is 12 bytes");


void mpx_set_error(struct mpx_nl_error *err, int code, const char *what) {
    if (!err) return;
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s", what);
}

void mpx_set_errno(struct mpx_nl_error *err, const char *call) {
    if (!err) return;
    err->code = errno;
    snprintf(err->message, sizeof err->message, "%s: %s", call, strerror(errno));
}

struct mpx_nl *mpx_nl_open(int bus, unsigned int groups, struct mpx_nl_error *err) {
    struct mpx_nl *nl = calloc(1, sizeof *nl);
    if (!nl) { mpx_set_errno(err, "calloc"); return NULL; }
    nl->sock = mnl_socket_open2(bus, SOCK_CLOEXEC);
    if (!nl->sock) { mpx_set_errno(err, "mnl_socket_open"); free(nl); return NULL; }
    int on = 1;
    // Extended ACKs carry the kernel's own error text ("address not found", ...).
    mnl_socket_setsockopt(nl->sock, MPX_NETLINK_EXT_ACK, &on, sizeof on);
    mnl_socket_setsockopt(nl->sock, MPX_NETLINK_CAP_ACK, &on, sizeof on);
    if (mnl_socket_bind(nl->sock, groups, MNL_SOCKET_AUTOPID) < 0) {
        mpx_set_errno(err, "mnl_socket_bind");
        mnl_socket_close(nl->sock);
        free(nl);
        return NULL;
    }
    nl->portid = mnl_socket_get_portid(nl->sock);
    nl->seq = 1;
    return nl;
}

void mpx_nl_close(struct mpx_nl *nl) {
    if (!nl) return;
    mnl_socket_close(nl->sock);
    free(nl);
}

int mpx_nl_fd(const struct mpx_nl *nl) { return mnl_socket_get_fd(nl->sock); }

long mpx_nl_receive(struct mpx_nl *nl, void *buf, size_t len, int dontwait, struct mpx_nl_error *err) {
    for (;;) {
        ssize_t n = recv(mnl_socket_get_fd(nl->sock), buf, len, dontwait ? MSG_DONTWAIT : 0);
        if (n >= 0) return (long)n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        mpx_set_errno(err, "recv(netlink)");
        return -1;
    }
}

int mpx_nl_join_group(struct mpx_nl *nl, uint32_t group, struct mpx_nl_error *err) {
    if (mnl_socket_setsockopt(nl->sock, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
        mpx_set_errno(err, "NETLINK_ADD_MEMBERSHIP");
        return -1;
    }
    return 0;
}

// ---------- parsing ----------


static int collect_attr(const struct nlattr *attr, void *data) {
    struct attr_table *t = data;
    int type = mnl_attr_get_type(attr);
    if (type <= t->max && type < 32) t->at[type] = attr;
    return MNL_CB_OK;
}

int mpx_parse_attrs(const struct nlmsghdr *nlh, size_t header, struct attr_table *t, int max) {
    memset(t, 0, sizeof *t);
    t->max = max;
    return mnl_attr_parse(nlh, (unsigned int)header, collect_attr, t);
}

int mpx_parse_nested(const struct nlattr *nest, struct attr_table *t, int max) {
    memset(t, 0, sizeof *t);
    t->max = max;
    return mnl_attr_parse_nested(nest, collect_attr, t);
}

int mpx_copy_addr(const struct nlattr *a, uint8_t out[16], size_t want) {
    if (!a || mnl_attr_get_payload_len(a) != want) return 0;
    memcpy(out, mnl_attr_get_payload(a), want);
    return 1;
}

int mpx_attr_u8(const struct nlattr *a, uint8_t *out) {
    if (!a || mnl_attr_get_payload_len(a) < 1) return 0;
    *out = mnl_attr_get_u8(a);
    return 1;
}
int mpx_attr_u16(const struct nlattr *a, uint16_t *out) {
    if (!a || mnl_attr_get_payload_len(a) < 2) return 0;
    *out = mnl_attr_get_u16(a);
    return 1;
}
int mpx_attr_u32(const struct nlattr *a, uint32_t *out) {
    if (!a || mnl_attr_get_payload_len(a) < 4) return 0;
    *out = mnl_attr_get_u32(a);
    return 1;
}

void mpx_malformed(struct mpx_nl_record *out, const char *why) {
    out->kind = MPX_REC_MALFORMED;
    mpx_set_error(&out->error, EBADMSG, why);
}

static void parse_endpoint(const struct nlattr *nest, struct mpx_pm_endpoint *ep) {
    struct attr_table t;
    memset(ep, 0, sizeof *ep);
    if (mpx_parse_nested(nest, &t, MPX_PM_ADDR_ATTR_MAX) < 0) return;
    uint16_t family = 0;
    if (mpx_attr_u16(t.at[MPX_PM_ADDR_ATTR_FAMILY], &family)) ep->family = (uint8_t)family;
    mpx_attr_u8(t.at[MPX_PM_ADDR_ATTR_ID], &ep->id);
    if (!mpx_copy_addr(t.at[MPX_PM_ADDR_ATTR_ADDR4], ep->addr, 4))
        mpx_copy_addr(t.at[MPX_PM_ADDR_ATTR_ADDR6], ep->addr, 16);
    mpx_attr_u16(t.at[MPX_PM_ADDR_ATTR_PORT], &ep->port);
    mpx_attr_u32(t.at[MPX_PM_ADDR_ATTR_FLAGS], &ep->flags);
    uint32_t ifindex = 0;
    if (mpx_attr_u32(t.at[MPX_PM_ADDR_ATTR_IF_IDX], &ifindex)) ep->ifindex = (int32_t)ifindex;
}

static void parse_pm_event(const struct nlmsghdr *nlh, const struct genlmsghdr *genl, struct mpx_nl_record *out) {
    struct attr_table t;
    struct mpx_pm_event *ev = &out->event;
    out->kind = MPX_REC_PM_EVENT;
    ev->type = genl->cmd;
    if (mpx_parse_attrs(nlh, sizeof *genl, &t, MPX_ATTR_MAX) < 0) { mpx_malformed(out, "mptcp event: bad attributes"); return; }
    if (mpx_attr_u32(t.at[MPX_ATTR_TOKEN], &ev->token)) ev->present |= MPX_EV_HAS_TOKEN;
    uint16_t family = 0;
    if (mpx_attr_u16(t.at[MPX_ATTR_FAMILY], &family)) ev->family = (uint8_t)family;
    if (mpx_copy_addr(t.at[MPX_ATTR_SADDR4], ev->saddr, 4) || mpx_copy_addr(t.at[MPX_ATTR_SADDR6], ev->saddr, 16)) ev->present |= MPX_EV_HAS_SADDR;
    if (mpx_copy_addr(t.at[MPX_ATTR_DADDR4], ev->daddr, 4) || mpx_copy_addr(t.at[MPX_ATTR_DADDR6], ev->daddr, 16)) ev->present |= MPX_EV_HAS_DADDR;
    uint16_t port;
    // Event ports are network order (unlike PM_ADDR_ATTR_PORT).
    if (mpx_attr_u16(t.at[MPX_ATTR_SPORT], &port)) { ev->sport = ntohs(port); ev->present |= MPX_EV_HAS_PORTS; }
    if (mpx_attr_u16(t.at[MPX_ATTR_DPORT], &port)) { ev->dport = ntohs(port); ev->present |= MPX_EV_HAS_PORTS; }
    if (mpx_attr_u8(t.at[MPX_ATTR_LOC_ID], &ev->loc_id) | mpx_attr_u8(t.at[MPX_ATTR_REM_ID], &ev->rem_id)) ev->present |= MPX_EV_HAS_IDS;
    if (mpx_attr_u8(t.at[MPX_ATTR_BACKUP], &ev->backup)) ev->present |= MPX_EV_HAS_BACKUP;
    if (mpx_attr_u8(t.at[MPX_ATTR_ERROR], &ev->error)) ev->present |= MPX_EV_HAS_ERROR;
    uint32_t ifindex;
    if (mpx_attr_u32(t.at[MPX_ATTR_IF_IDX], &ifindex)) { ev->ifindex = (int32_t)ifindex; ev->present |= MPX_EV_HAS_IFINDEX; }
    // Required per event, as the kernel always sends them: a token for connection events.
    if (ev->type != MPX_EVENT_LISTENER_CREATED && ev->type != MPX_EVENT_LISTENER_CLOSED && !(ev->present & MPX_EV_HAS_TOKEN))
        mpx_malformed(out, "mptcp event without MPTCP_ATTR_TOKEN");
}

void mpx_parse_error(const struct nlmsghdr *nlh, struct mpx_nl_record *out) {
    const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
    if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *e) { mpx_malformed(out, "truncated NLMSG_ERROR"); return; }
    if (e->error == 0) { out->kind = MPX_REC_ACK; return; }
    out->kind = MPX_REC_ERROR;
    out->error.code = -e->error;
    snprintf(out->error.message, sizeof out->error.message, "%s", strerror(-e->error));
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return;
    // With NETLINK_CAP_ACK the original request is not echoed: TLVs follow the header.
    size_t offset = sizeof *e;
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) offset += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
    const struct nlattr *attr;
    mnl_attr_for_each(attr, nlh, offset) {
        if (mnl_attr_get_type(attr) == MPX_NLMSGERR_ATTR_MSG && mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0) {
            snprintf(out->error.message, sizeof out->error.message, "%s", mnl_attr_get_str(attr));
        }
    }
}

const struct nlmsghdr *mpx_take_message(const void *buf, size_t len, size_t *offset, struct mpx_nl_record *out, int *result) {
    memset(out, 0, sizeof *out);
    *result = 1;
    if (*offset >= len) { *result = 0; return NULL; }
    const struct nlmsghdr *nlh = (const struct nlmsghdr *)((const char *)buf + *offset);
    size_t remaining = len - *offset;
    // Checked here in size_t rather than with mnl_nlmsg_ok, which compares (int)nlmsg_len: a
    // length near 2^32 is negative there and passes, and NLMSG_ALIGN of it wraps to 0, so the
    // same message would be taken again forever (found by the mutation test of recorded dumps).
    if (remaining < sizeof *nlh || nlh->nlmsg_len < sizeof *nlh || nlh->nlmsg_len > remaining) {
        *offset = len;
        mpx_malformed(out, "truncated netlink message");
        return NULL;
    }
    size_t aligned = ((size_t)nlh->nlmsg_len + NLMSG_ALIGNTO - 1) & ~(size_t)(NLMSG_ALIGNTO - 1);
    *offset += aligned < remaining ? aligned : remaining;
    out->seq = nlh->nlmsg_seq;
    if (nlh->nlmsg_type == NLMSG_DONE) { out->kind = MPX_REC_DONE; return NULL; }
    if (nlh->nlmsg_type == NLMSG_ERROR) { mpx_parse_error(nlh, out); return NULL; }
    return nlh;
}

int mpx_nl_next(const void *buf, size_t len, size_t *offset, uint16_t pm_family_id, struct mpx_nl_record *out) {
    int result;
    const struct nlmsghdr *nlh = mpx_take_message(buf, len, offset, out, &result);
    if (!nlh) return result;
    switch (nlh->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK: {
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *ifi) { mpx_malformed(out, "truncated ifinfomsg"); return 1; }
        struct attr_table t;
        if (mpx_parse_attrs(nlh, sizeof *ifi, &t, IFLA_OPERSTATE) < 0) { mpx_malformed(out, "link: bad attributes"); return 1; }
        out->kind = MPX_REC_LINK;
        out->link.ifindex = ifi->ifi_index;
        out->link.flags = ifi->ifi_flags;
        out->link.deleted = nlh->nlmsg_type == RTM_DELLINK;
        if (t.at[IFLA_IFNAME] && mnl_attr_validate(t.at[IFLA_IFNAME], MNL_TYPE_NUL_STRING) == 0)
            snprintf(out->link.name, sizeof out->link.name, "%s", mnl_attr_get_str(t.at[IFLA_IFNAME]));
        else { mpx_malformed(out, "link without IFLA_IFNAME"); return 1; }
        mpx_attr_u8(t.at[IFLA_OPERSTATE], &out->link.operstate);
        return 1;
    }
    case RTM_NEWADDR:
    case RTM_DELADDR: {
        const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *ifa) { mpx_malformed(out, "truncated ifaddrmsg"); return 1; }
        struct attr_table t;
        if (mpx_parse_attrs(nlh, sizeof *ifa, &t, IFA_FLAGS) < 0) { mpx_malformed(out, "address: bad attributes"); return 1; }
        out->kind = MPX_REC_ADDR;
        out->addr.ifindex = (int32_t)ifa->ifa_index;
        out->addr.family = ifa->ifa_family;
        out->addr.prefixlen = ifa->ifa_prefixlen;
        out->addr.scope = ifa->ifa_scope;
        out->addr.flags = ifa->ifa_flags;
        out->addr.deleted = nlh->nlmsg_type == RTM_DELADDR;
        size_t want = ifa->ifa_family == AF_INET ? 4 : 16;
        // IFA_LOCAL is the interface's own address on point-to-point links.
        if (!mpx_copy_addr(t.at[IFA_LOCAL], out->addr.addr, want) && !mpx_copy_addr(t.at[IFA_ADDRESS], out->addr.addr, want))
            mpx_malformed(out, "address without IFA_ADDRESS of the right size");
        mpx_attr_u32(t.at[IFA_FLAGS], &out->addr.flags);
        return 1;
    }
    case RTM_NEWROUTE:
    case RTM_DELROUTE: {
        const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *rtm) { mpx_malformed(out, "truncated rtmsg"); return 1; }
        struct attr_table t;
        if (mpx_parse_attrs(nlh, sizeof *rtm, &t, RTA_TABLE) < 0) { mpx_malformed(out, "route: bad attributes"); return 1; }
        out->kind = MPX_REC_ROUTE;
        out->route.family = rtm->rtm_family;
        out->route.dst_len = rtm->rtm_dst_len;
        out->route.type = rtm->rtm_type;
        out->route.deleted = nlh->nlmsg_type == RTM_DELROUTE;
        out->route.table = rtm->rtm_table;
        mpx_attr_u32(t.at[RTA_TABLE], &out->route.table);  // tables above 255 are only here
        uint32_t oif = 0;
        mpx_attr_u32(t.at[RTA_OIF], &oif);
        out->route.oif = (int32_t)oif;
        mpx_attr_u32(t.at[RTA_PRIORITY], &out->route.priority);
        size_t want = rtm->rtm_family == AF_INET ? 4 : 16;
        if (t.at[RTA_GATEWAY]) {
            if (!mpx_copy_addr(t.at[RTA_GATEWAY], out->route.gateway, want)) { mpx_malformed(out, "route: RTA_GATEWAY of the wrong size"); return 1; }
            out->route.has_gateway = 1;
        }
        return 1;
    }
    default:
        break;
    }
    if (pm_family_id != 0 && nlh->nlmsg_type == pm_family_id) {
        const struct genlmsghdr *genl = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof *genl) { mpx_malformed(out, "truncated genlmsghdr"); return 1; }
        if (nlh->nlmsg_seq == 0) { parse_pm_event(nlh, genl, out); return 1; }
        // A reply to one of our requests (seq != 0): an endpoint or the limits.
        struct attr_table t;
        if (mpx_parse_attrs(nlh, sizeof *genl, &t, MPX_PM_ATTR_SUBFLOWS) < 0) { mpx_malformed(out, "mptcp_pm reply: bad attributes"); return 1; }
        if (t.at[MPX_PM_ATTR_ADDR]) {
            out->kind = MPX_REC_PM_ENDPOINT;
            parse_endpoint(t.at[MPX_PM_ATTR_ADDR], &out->endpoint);
        } else if (t.at[MPX_PM_ATTR_SUBFLOWS] || t.at[MPX_PM_ATTR_RCV_ADD_ADDRS]) {
            out->kind = MPX_REC_PM_LIMITS;
            mpx_attr_u32(t.at[MPX_PM_ATTR_SUBFLOWS], &out->limit_subflows);
            mpx_attr_u32(t.at[MPX_PM_ATTR_RCV_ADD_ADDRS], &out->limit_add_addr_accepted);
        }
        return 1;
    }
    out->kind = MPX_REC_OTHER;
    return 1;
}

// ---------- requests ----------

// Sends the message and reads until the kernel's ACK or error for it. A GET reply that
// comes before the ACK is copied to `reply` when given.
static int transact(struct mpx_nl *nl, struct nlmsghdr *nlh, uint16_t pm_family, struct mpx_nl_record *reply, struct mpx_nl_error *err) {
    if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) { mpx_set_errno(err, "sendto(netlink)"); return -1; }
    char buf[16384];
    for (;;) {
        long n = mpx_nl_receive(nl, buf, sizeof buf, 0, err);
        if (n < 0) return -1;
        size_t offset = 0;
        struct mpx_nl_record rec;
        while (mpx_nl_next(buf, (size_t)n, &offset, pm_family, &rec)) {
            if (rec.seq != nlh->nlmsg_seq) continue;  // an event or a stale answer
            if (rec.kind == MPX_REC_ERROR) { if (err) *err = rec.error; return -1; }
            if (rec.kind == MPX_REC_ACK) return 0;
            if (reply && (rec.kind == MPX_REC_PM_LIMITS || rec.kind == MPX_REC_PM_ENDPOINT || rec.kind == MPX_REC_ROUTE)) *reply = rec;
        }
    }
}

// Every request: NLM_F_REQUEST plus `flags`, and the socket's next sequence number.
struct nlmsghdr *mpx_request_header(struct mpx_nl *nl, char *buf, uint16_t type, uint16_t flags) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST | flags;
    nlh->nlmsg_seq = ++nl->seq;
    return nlh;
}

static struct nlmsghdr *genl_header(struct mpx_nl *nl, char *buf, uint16_t family, uint8_t cmd, uint16_t flags) {
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, family, flags);
    struct genlmsghdr *genl = mnl_nlmsg_put_extra_header(nlh, sizeof *genl);
    genl->cmd = cmd;
    genl->version = MPX_PM_VERSION;
    return nlh;
}

int mpx_pm_resolve(struct mpx_nl *nl, struct mpx_pm_family *out, struct mpx_nl_error *err) {
    char buf[8192];
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, GENL_ID_CTRL, NLM_F_ACK);
    struct genlmsghdr *genl = mnl_nlmsg_put_extra_header(nlh, sizeof *genl);
    genl->cmd = CTRL_CMD_GETFAMILY;
    genl->version = 1;
    mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, "mptcp_pm");
    uint32_t seq = nlh->nlmsg_seq;
    if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) { mpx_set_errno(err, "sendto(GETFAMILY)"); return -1; }
    memset(out, 0, sizeof *out);
    for (;;) {
        long n = mpx_nl_receive(nl, buf, sizeof buf, 0, err);
        if (n < 0) return -1;
        int remaining = (int)n;
        for (const struct nlmsghdr *m = (const struct nlmsghdr *)buf; mnl_nlmsg_ok(m, remaining); m = mnl_nlmsg_next(m, &remaining)) {
            if (m->nlmsg_seq != seq) continue;
            if (m->nlmsg_type == NLMSG_ERROR) {
                struct mpx_nl_record rec;
                memset(&rec, 0, sizeof rec);
                mpx_parse_error(m, &rec);
                if (rec.kind == MPX_REC_ACK) {
                    if (out->id == 0) { mpx_set_error(err, ENOENT, "generic netlink family mptcp_pm not found"); return -1; }
                    if (out->events_group == 0) { mpx_set_error(err, ENOENT, "mptcp_pm has no mptcp_pm_events group"); return -1; }
                    return 0;
                }
                if (rec.error.code == ENOENT) mpx_set_error(err, ENOENT, "generic netlink family mptcp_pm not found: is MPTCP enabled in this kernel?");
                else if (err) *err = rec.error;
                return -1;
            }
            struct attr_table t;
            if (mpx_parse_attrs(m, sizeof(struct genlmsghdr), &t, CTRL_ATTR_MCAST_GROUPS) < 0) continue;
            mpx_attr_u16(t.at[CTRL_ATTR_FAMILY_ID], &out->id);
            if (t.at[CTRL_ATTR_MCAST_GROUPS]) {
                const struct nlattr *group;
                mnl_attr_for_each_nested(group, t.at[CTRL_ATTR_MCAST_GROUPS]) {
                    struct attr_table g;
                    if (mpx_parse_nested(group, &g, CTRL_ATTR_MCAST_GRP_ID) < 0) continue;
                    if (g.at[CTRL_ATTR_MCAST_GRP_NAME] && g.at[CTRL_ATTR_MCAST_GRP_ID] &&
                        strcmp(mnl_attr_get_str(g.at[CTRL_ATTR_MCAST_GRP_NAME]), "mptcp_pm_events") == 0)
                        out->events_group = mnl_attr_get_u32(g.at[CTRL_ATTR_MCAST_GRP_ID]);
                }
            }
        }
    }
}

static void put_endpoint(struct nlmsghdr *nlh, const struct mpx_pm_endpoint *ep, int with_flags) {
    struct nlattr *nest = mnl_attr_nest_start(nlh, MPX_PM_ATTR_ADDR | NLA_F_NESTED);
    if (ep->family) {
        mnl_attr_put_u16(nlh, MPX_PM_ADDR_ATTR_FAMILY, ep->family);
        if (ep->family == AF_INET) mnl_attr_put(nlh, MPX_PM_ADDR_ATTR_ADDR4, 4, ep->addr);
        else mnl_attr_put(nlh, MPX_PM_ADDR_ATTR_ADDR6, 16, ep->addr);
    }
    if (ep->id) mnl_attr_put_u8(nlh, MPX_PM_ADDR_ATTR_ID, ep->id);
    if (ep->port) mnl_attr_put_u16(nlh, MPX_PM_ADDR_ATTR_PORT, ep->port);
    if (with_flags) mnl_attr_put_u32(nlh, MPX_PM_ADDR_ATTR_FLAGS, ep->flags);
    if (ep->ifindex > 0) mnl_attr_put_u32(nlh, MPX_PM_ADDR_ATTR_IF_IDX, (uint32_t)ep->ifindex);
    mnl_attr_nest_end(nlh, nest);
}

int mpx_pm_add_addr(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_ADD_ADDR, NLM_F_ACK);
    put_endpoint(nlh, ep, 1);
    return transact(nl, nlh, fam->id, NULL, err);
}

int mpx_pm_del_addr(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_DEL_ADDR, NLM_F_ACK);
    struct mpx_pm_endpoint only = *ep;
    only.flags = 0; only.ifindex = 0; only.port = 0;
    if (only.id != 0) only.family = 0;  // the id names it; id 0 also needs the address
    put_endpoint(nlh, &only, 0);
    return transact(nl, nlh, fam->id, NULL, err);
}

int mpx_pm_set_flags(struct mpx_nl *nl, const struct mpx_pm_family *fam, const struct mpx_pm_endpoint *ep, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_SET_FLAGS, NLM_F_ACK);
    struct mpx_pm_endpoint only = *ep;
    only.ifindex = 0; only.port = 0;
    put_endpoint(nlh, &only, 1);
    return transact(nl, nlh, fam->id, NULL, err);
}

int mpx_pm_flush(struct mpx_nl *nl, const struct mpx_pm_family *fam, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_FLUSH_ADDRS, NLM_F_ACK);
    return transact(nl, nlh, fam->id, NULL, err);
}

int mpx_pm_set_limits(struct mpx_nl *nl, const struct mpx_pm_family *fam, uint32_t subflows, uint32_t add_addr_accepted, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_SET_LIMITS, NLM_F_ACK);
    mnl_attr_put_u32(nlh, MPX_PM_ATTR_RCV_ADD_ADDRS, add_addr_accepted);
    mnl_attr_put_u32(nlh, MPX_PM_ATTR_SUBFLOWS, subflows);
    return transact(nl, nlh, fam->id, NULL, err);
}

int mpx_pm_get_limits(struct mpx_nl *nl, const struct mpx_pm_family *fam, uint32_t *subflows, uint32_t *add_addr_accepted, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_GET_LIMITS, NLM_F_ACK);
    struct mpx_nl_record reply;
    memset(&reply, 0, sizeof reply);
    if (transact(nl, nlh, fam->id, &reply, err) < 0) return -1;
    if (reply.kind != MPX_REC_PM_LIMITS) { mpx_set_error(err, EPROTO, "GET_LIMITS: no limits in the reply"); return -1; }
    *subflows = reply.limit_subflows;
    *add_addr_accepted = reply.limit_add_addr_accepted;
    return 0;
}

int mpx_pm_request_dump(struct mpx_nl *nl, const struct mpx_pm_family *fam, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = genl_header(nl, buf, fam->id, MPX_PM_CMD_GET_ADDR, NLM_F_DUMP);
    if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) { mpx_set_errno(err, "sendto(GET_ADDR dump)"); return -1; }
    return (int)nlh->nlmsg_seq;
}

int mpx_rt_request_dump(struct mpx_nl *nl, uint16_t type, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, type, NLM_F_DUMP);
    struct rtgenmsg *gen = mnl_nlmsg_put_extra_header(nlh, sizeof(struct ifaddrmsg));
    gen->rtgen_family = AF_UNSPEC;
    if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) { mpx_set_errno(err, "sendto(rtnetlink dump)"); return -1; }
    return (int)nlh->nlmsg_seq;
}

int mpx_rt_route(struct mpx_nl *nl, int add, uint32_t table, uint8_t family,
                 const uint8_t *dst, uint8_t dst_len, const uint8_t *gateway,
                 int32_t oif, const uint8_t *prefsrc, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    size_t alen = family == AF_INET ? 4 : 16;
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, add ? RTM_NEWROUTE : RTM_DELROUTE, NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_REPLACE : 0));
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = family;
    rtm->rtm_dst_len = dst_len;
    rtm->rtm_table = RT_TABLE_UNSPEC;
    rtm->rtm_protocol = RTPROT_STATIC;
    rtm->rtm_scope = gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    rtm->rtm_type = RTN_UNICAST;
    if (dst_len) mnl_attr_put(nlh, RTA_DST, alen, dst);
    if (gateway) mnl_attr_put(nlh, RTA_GATEWAY, alen, gateway);
    if (oif > 0) mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)oif);
    if (prefsrc) mnl_attr_put(nlh, RTA_PREFSRC, alen, prefsrc);
    mnl_attr_put_u32(nlh, RTA_TABLE, table);
    return transact(nl, nlh, 0, NULL, err);
}

int mpx_rt_get_route(struct mpx_nl *nl, uint8_t family, const uint8_t *dst, const uint8_t *src,
                     int32_t *oif, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    size_t alen = family == AF_INET ? 4 : 16;
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, RTM_GETROUTE, NLM_F_ACK);
    struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
    rtm->rtm_family = family;
    rtm->rtm_dst_len = (unsigned char)(alen * 8);
    mnl_attr_put(nlh, RTA_DST, alen, dst);
    if (src) { rtm->rtm_src_len = (unsigned char)(alen * 8); mnl_attr_put(nlh, RTA_SRC, alen, src); }
    struct mpx_nl_record reply;
    memset(&reply, 0, sizeof reply);
    if (transact(nl, nlh, 0, &reply, err) < 0) return -1;
    *oif = reply.kind == MPX_REC_ROUTE ? reply.route.oif : 0;
    return 0;
}

int mpx_rt_rule(struct mpx_nl *nl, int add, uint32_t table, uint32_t priority, uint8_t family,
                const uint8_t *src, uint8_t src_len, struct mpx_nl_error *err) {
    char buf[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh = mpx_request_header(nl, buf, add ? RTM_NEWRULE : RTM_DELRULE, NLM_F_ACK | (add ? NLM_F_CREATE | NLM_F_EXCL : 0));
    struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof *frh);
    frh->family = family;
    frh->src_len = src_len;
    frh->table = RT_TABLE_UNSPEC;
    frh->action = FR_ACT_TO_TBL;
    mnl_attr_put(nlh, FRA_SRC, family == AF_INET ? 4 : 16, src);
    mnl_attr_put_u32(nlh, FRA_TABLE, table);
    mnl_attr_put_u32(nlh, FRA_PRIORITY, priority);
    return transact(nl, nlh, 0, NULL, err);
}
