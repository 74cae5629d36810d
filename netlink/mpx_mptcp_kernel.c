// Layout checks for the copies in include/mpx_mptcp_kernel.h. If the compiler
// disagrees with the kernel's layout (as measured on Linux 6.18), the build fails
// here instead of the proxy reading garbage at run time.
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/tcp.h>
#include <linux/mptcp.h>
#include <netinet/in.h>
#include "mpx_mptcp_kernel.h"

_Static_assert(sizeof(struct mpx_mptcp_info) == 96, "mptcp_info is 96 bytes on 6.18");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_flags) == 8, "mptcpi_flags @8");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_token) == 12, "mptcpi_token @12");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_local_addr_used) == 40, "local_addr_used @40");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_retransmits) == 44, "retransmits @44");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_bytes_sent) == 56, "bytes_sent @56");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_bytes_acked) == 72, "bytes_acked @72");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_subflows_total) == 80, "subflows_total @80");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_endp_laminar_max) == 81, "laminar_max @81");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_last_data_sent) == 84, "last_data_sent @84");
_Static_assert(offsetof(struct mpx_mptcp_info, mptcpi_last_ack_recv) == 92, "last_ack_recv @92");
_Static_assert(sizeof(struct mpx_mptcp_subflow_data) == 16, "mptcp_subflow_data is 16 bytes");

// tcp_info's leading fields have not moved since 2.6; the kernel copies min(size_user, its own
// size) per subflow, so the 6.1 header's struct is a safe element size.
_Static_assert(offsetof(struct tcp_info, tcpi_state) == 0, "tcpi_state @0");
_Static_assert(offsetof(struct tcp_info, tcpi_rtt) == 68, "tcpi_rtt @68");

enum { MPX_SUBFLOWS_AT_MOST = 8 };

// One of the per-subflow array options (MPTCP_TCPINFO, MPTCP_SUBFLOW_ADDRS) into `buffer`: a
// struct whose first member is the header, then MPX_SUBFLOWS_AT_MOST elements of
// `element_size` bytes, `buffer_size` in all.
// Returns how many elements were filled (at most MPX_SUBFLOWS_AT_MOST and `max`), or -1 with
// errno set. The kernel strides its array by min(size_user, its own element size): a kernel
// whose element is smaller than ours would place the entries elsewhere, so refuse (EPROTO)
// rather than misread.
static int subflow_array(int fd, int optname, void *buffer, size_t buffer_size, uint32_t element_size, int max) {
    memset(buffer, 0, buffer_size);
    struct mpx_mptcp_subflow_data *reply = buffer;
    reply->size_subflow_data = sizeof *reply;
    reply->size_user = element_size;
    socklen_t length = (socklen_t)buffer_size;
    if (getsockopt(fd, 284 /* SOL_MPTCP */, optname, buffer, &length) != 0) return -1;
    if (reply->size_user != element_size) {
        errno = EPROTO;
        return -1;
    }
    // The kernel says how many subflows exist and copies as many as fit the buffer we gave it.
    uint32_t filled = reply->num_subflows;
    if (filled > MPX_SUBFLOWS_AT_MOST) filled = MPX_SUBFLOWS_AT_MOST;
    if (max < 0) max = 0;
    if (filled > (uint32_t)max) filled = (uint32_t)max;
    return (int)filled;
}

int mpx_mptcp_subflow_handshakes(int fd, struct mpx_subflow_handshake *out, int max) {
    struct {
        struct mpx_mptcp_subflow_data header;
        struct tcp_info subflows[MPX_SUBFLOWS_AT_MOST];
    } reply;
    int filled = subflow_array(fd, MPX_MPTCP_TCPINFO, &reply, sizeof reply, sizeof reply.subflows[0], max);
    for (int i = 0; i < filled; i++) {
        out[i].tcp_state = reply.subflows[i].tcpi_state;
        out[i].rtt_us = reply.subflows[i].tcpi_rtt;
    }
    return filled;
}

// struct mptcp_subflow_addrs (in the 6.1 header already, unchanged since 5.16): two unions of
// a __kernel_sockaddr_storage, local first.
_Static_assert(sizeof(struct mptcp_subflow_addrs) == 256, "mptcp_subflow_addrs is 256 bytes");

int mpx_mptcp_subflow_locals(int fd, struct mpx_subflow_local *out, int max) {
    struct {
        struct mpx_mptcp_subflow_data header;
        struct mptcp_subflow_addrs subflows[MPX_SUBFLOWS_AT_MOST];
    } reply;
    int filled = subflow_array(fd, MPX_MPTCP_SUBFLOW_ADDRS, &reply, sizeof reply, sizeof reply.subflows[0], max);
    for (int i = 0; i < filled; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].family = reply.subflows[i].sa_family;
        if (out[i].family == AF_INET) {
            memcpy(out[i].address, &reply.subflows[i].sin_local.sin_addr, 4);
        } else if (out[i].family == AF_INET6) {
            memcpy(out[i].address, &reply.subflows[i].sin6_local.sin6_addr, 16);
        }
    }
    return filled;
}
