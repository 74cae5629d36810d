// Umbrella header of the netlink C target: kernel definitions and the libmnl wrapper.
#include "mpx_mptcp_kernel.h"
#include "mpx_netlink.h"
