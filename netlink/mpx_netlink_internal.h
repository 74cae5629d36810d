// Shared between the C files of this target (generic/route netlink in mpx_netlink.c,
// sock_diag in mpx_sock_diag.c); not part of the Swift-visible interface.
#ifndef MPX_NETLINK_INTERNAL_H
#define MPX_NETLINK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <libmnl/libmnl.h>
#include "mpx_netlink.h"

struct mpx_nl {
    struct mnl_socket *sock;
    uint32_t portid;
    uint32_t seq;
};

// Attributes of one message or nest, indexed by type (types above `max` are ignored).
struct attr_table { const struct nlattr *at[32]; int max; };

void mpx_set_error(struct mpx_nl_error *err, int code, const char *what);
void mpx_set_errno(struct mpx_nl_error *err, const char *call);
int mpx_parse_attrs(const struct nlmsghdr *nlh, size_t header, struct attr_table *t, int max);
int mpx_parse_nested(const struct nlattr *nest, struct attr_table *t, int max);
int mpx_copy_addr(const struct nlattr *a, uint8_t out[16], size_t want);
int mpx_attr_u8(const struct nlattr *a, uint8_t *out);
int mpx_attr_u16(const struct nlattr *a, uint16_t *out);
int mpx_attr_u32(const struct nlattr *a, uint32_t *out);
// Marks the record malformed, with the reason in its error text.
void mpx_malformed(struct mpx_nl_record *out, const char *why);
// The start every parser shares: clears *out, takes the message at *offset and advances past
// it. Returns the message for the caller to interpret, or NULL when the record is already
// complete; *result is then what the parser returns (0 at the end of the buffer, 1 for a
// truncated message, NLMSG_DONE or NLMSG_ERROR).
const struct nlmsghdr *mpx_take_message(const void *buf, size_t len, size_t *offset, struct mpx_nl_record *out, int *result);
// NLMSG_ERROR into an ACK or an error record (with the kernel's extended-ACK text).
void mpx_parse_error(const struct nlmsghdr *nlh, struct mpx_nl_record *out);
// Every request: NLM_F_REQUEST plus `flags`, and the socket's next sequence number.
struct nlmsghdr *mpx_request_header(struct mpx_nl *nl, char *buf, uint16_t type, uint16_t flags);

#endif
