// Layout checks for the copies in include/mpx_mptcp_kernel.h. If the compiler
// disagrees with the kernel's layout (as measured on Linux 6.18), the build fails
// here instead of the proxy reading garbage at run time.
#include <stddef.h>
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
