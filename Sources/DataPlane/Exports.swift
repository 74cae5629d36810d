// Addresses are part of DataPlane's public API (sockets take SocketAddress): whoever uses
// the data plane sees them without a second import.
@_exported import NetworkTypes
