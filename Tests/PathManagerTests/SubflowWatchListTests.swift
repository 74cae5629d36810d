import DataPlane
import MPTCPKernel
import PathManager
import Testing

/// Which subflows the health monitor looks up, from made-up events, dumps and answers.
@Suite("Subflow watch list")
struct SubflowWatchListTests {
    let wifi = IPAddress(parsing: "10.1.1.1")!
    let eth = IPAddress(parsing: "10.1.2.1")!
    let server = SocketAddress(IPAddress(parsing: "10.9.0.1")!, port: 4443)

    func established(_ token: UInt32, _ address: IPAddress, port: UInt16, device: Int32? = nil, join: Bool = false) -> MPTCPEvent {
        MPTCPEvent(kind: join ? .subflowEstablished : .established, token: token, local: SocketAddress(address, port: port), remote: server,
                   interfaceIndex: device)
    }

    func key(_ address: IPAddress, port: UInt16, device: Int32 = 0) -> DiagSocketKey {
        DiagSocketKey(local: SocketAddress(address, port: port), remote: server, boundInterfaceIndex: device)
    }

    func subflow(_ token: UInt32, _ address: IPAddress, port: UInt16, device: Int32 = 0, state: TCPState = .established) -> DiagSocket {
        DiagSocket(cookie: UInt64(port), state: state, local: SocketAddress(address, port: port), remote: server, boundInterfaceIndex: device,
                   tcp: .init(), subflow: .init(localToken: token))
    }

    @Test("it asks for a dump first; then follows established, sub_established, sub_closed and closed, on the paths asked about")
    func followsEvents() {
        var list = SubflowWatchList()
        #expect(list.needsDump)
        list.replace(with: [])
        #expect(!list.needsDump)
        list.apply(established(7, wifi, port: 1000, device: 3))
        list.apply(established(7, eth, port: 1001, device: 4, join: true))
        list.apply(established(8, wifi, port: 1002))
        #expect(Set(list.keys(on: [wifi, eth])) == [key(wifi, port: 1000, device: 3), key(eth, port: 1001, device: 4), key(wifi, port: 1002)])
        #expect(list.keys(on: [eth]) == [key(eth, port: 1001, device: 4)])
        // A sub_closed without the device still names the subflow by its 4-tuple and token.
        list.apply(MPTCPEvent(kind: .subflowClosed, token: 7, local: SocketAddress(eth, port: 1001), remote: server))
        #expect(list.keys(on: [eth]).isEmpty)
        // closed names only the token: every subflow of that connection goes.
        list.apply(MPTCPEvent(kind: .closed, token: 7))
        #expect(list.keys(on: [wifi, eth]) == [key(wifi, port: 1002)])
        // Events that name no subflow change nothing.
        list.apply(MPTCPEvent(kind: .created, token: 9))
        list.apply(MPTCPEvent(kind: .established, token: 9))
        #expect(list.count == 1)
        #expect(!list.needsDump)
    }

    @Test("a dump is the whole truth; a lookup that finds nothing drops its key; lost events ask for a dump")
    func dumpsAndLookups() {
        var list = SubflowWatchList()
        list.apply(established(1, wifi, port: 2000))
        list.replace(with: [subflow(2, wifi, port: 2001, state: .synSent), subflow(2, eth, port: 2002, device: 4),
                            DiagSocket(cookie: 5, state: .established, local: SocketAddress(wifi, port: 22), remote: server)])
        // The plain TCP socket is not a subflow; the event's subflow was not in the dump.
        #expect(Set(list.keys(on: [wifi, eth])) == [key(wifi, port: 2001), key(eth, port: 2002, device: 4)])
        let asked = list.keys(on: [wifi, eth])
        list.refresh(asked: asked, found: [subflow(2, eth, port: 2002, device: 4)])
        #expect(list.keys(on: [wifi, eth]) == [key(eth, port: 2002, device: 4)])
        list.eventsLost()
        #expect(list.needsDump)
        list.replace(with: [])
        #expect(!list.needsDump && list.count == 0)
    }

    @Test("past its capacity it stops following events and asks for dumps")
    func bounded() {
        var list = SubflowWatchList(capacity: 2)
        list.replace(with: [])
        for port in UInt16(3000)..<3005 { list.apply(established(UInt32(port), wifi, port: port)) }
        #expect(list.count == 2)
        #expect(list.needsDump)
        list.replace(with: (UInt16(3000)..<3005).map { subflow(UInt32($0), wifi, port: $0) })
        #expect(list.count == 2)
        #expect(list.needsDump)
    }
}
