import ConvertProtocol
import DataPlane

// The two forms of a destination: the socket address we dial, and the Connect TLV's
// port + 128-bit address (IPv4 mapped as ::ffff:a.b.c.d).

extension ConvertDestination {
    init(_ address: SocketAddress) {
        switch address.address {
        case .v4(let b): self.init(ipv4: (b[0], b[1], b[2], b[3]), port: address.port)
        case .v6(let b): self.init(address16: b, port: address.port)
        }
    }
}

extension SocketAddress {
    init(_ destination: ConvertDestination) {
        if let v4 = destination.ipv4 {
            self.init(.v4(v4), port: destination.port)
        } else {
            self.init(.v6(destination.address), port: destination.port)
        }
    }
}
