#!/usr/bin/env python3
"""The in-kernel MPTCP path manager against the userspace one, on one connection set, kernel
MPTCP only (no proxy): the experiment behind docs/decisions/0017. Driven by
tools/bench/pm-kernel-vs-userspace, which builds the testbed and runs this in gw's namespace.

One process observes the MPTCP events of gw's namespace for both managers alike (the same
clock, the same parsing). With --manager userspace it is also the manager: on each
ESTABLISHED event it sends one SUBFLOW_CREATE per extra path, pipelined, acknowledgements
read as they come. With --manager kernel the kernel's endpoints do that work.

Phases, one JSON line each on stdout:
  fresh    N connections one after another: connect() to each path's SUB_ESTABLISHED.
  restore  M open connections lose the eth path (kernel: endpoint deleted; userspace:
           SUBFLOW_DESTROY per connection) and get it back (endpoint re-added; SUBFLOW_CREATE
           per connection): time from the manager's first command to the last SUB_CLOSED and
           the last SUB_ESTABLISHED, and the manager process's CPU for it.
  churn    connect, 100-byte exchange, close, for S seconds, from a second process (so the
           manager reads events while they run): connections/s, joins and events per
           connection, the manager's failed commands and CPU per connection, overruns.
Addresses are the testbed's (tools/testbed/testbed.sh); nothing leaves its namespaces.
"""
import argparse, errno, json, resource, select, socket, struct, subprocess, sys, time

IPPROTO_MPTCP = 262
NETLINK_GENERIC, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP = 16, 270, 1
NLM_F_REQUEST, NLM_F_ACK, NLMSG_ERROR, NLA_F_NESTED = 1, 4, 2, 0x8000
GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS = 1, 2, 7
# mptcp_pm (kernel-mptcp.md §1): commands, attributes, events.
CMD_SUBFLOW_CREATE, CMD_SUBFLOW_DESTROY = 10, 11
PM_ATTR_ADDR, PM_ATTR_TOKEN, PM_ATTR_ADDR_REMOTE = 1, 4, 6
ADDR_FAMILY, ADDR_ID, ADDR_ADDR4, ADDR_PORT = 1, 2, 3, 5
EV_CREATED, EV_ESTABLISHED, EV_CLOSED, EV_SUB_ESTABLISHED, EV_SUB_CLOSED = 1, 2, 3, 10, 11
AT_TOKEN, AT_SADDR4, AT_DADDR4, AT_SPORT, AT_DPORT = 1, 5, 7, 9, 10

SERVER = ("10.9.9.9", 7007)
# The initial subflow leaves over wifi (gw's route to 10.9.9.9); the joins over eth and cell.
JOINS = {"eth": ("10.1.2.1", 2), "cell": ("10.1.3.1", 3)}
PATH_OF = {"10.1.1.1": "wifi", "10.1.2.1": "eth", "10.1.3.1": "cell"}


def attr(kind, data):
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def parse_attrs(data):
    found, at = {}, 0
    while at + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, at)
        if size < 4:
            break
        found[kind & 0x3FFF] = data[at + 4:at + size]
        at += (size + 3) & ~3
    return found


def messages(buffer):
    at = 0
    while at + 16 <= len(buffer):
        size, kind, flags, seq, _ = struct.unpack_from("=IHHII", buffer, at)
        if size < 16:
            break
        yield kind, seq, buffer[at + 16:at + size]
        at += (size + 3) & ~3


class Genl:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))
        self.seq = 0

    def send(self, family, cmd, payload, flags=NLM_F_REQUEST | NLM_F_ACK):
        self.seq += 1
        body = struct.pack("BBH", cmd, 1, 0) + payload
        self.sock.send(struct.pack("=IHHII", 16 + len(body), family, flags, self.seq, 0) + body)
        return self.seq

    def resolve(self, name):
        self.send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"), NLM_F_REQUEST)
        for kind, _, body in messages(self.sock.recv(65536)):
            if kind == GENL_ID_CTRL:
                found = parse_attrs(body[4:])
                groups = {}
                for group in parse_attrs(found[CTRL_ATTR_MCAST_GROUPS]).values():
                    g = parse_attrs(group)
                    groups[g[1].rstrip(b"\0").decode()] = struct.unpack("=I", g[2])[0]
                return struct.unpack("=H", found[CTRL_ATTR_FAMILY_ID])[0], groups
        raise SystemExit("mptcp_pm family not found")


def addr4(address, ident=None, port=None):
    nested = attr(ADDR_FAMILY, struct.pack("=H", socket.AF_INET)) + attr(ADDR_ADDR4, socket.inet_aton(address))
    if ident is not None:
        nested += attr(ADDR_ID, struct.pack("B", ident))
    if port is not None:
        nested += attr(ADDR_PORT, struct.pack("=H", port))   # host order here, unlike events
    return nested


class Lab:
    def __init__(self, manager):
        self.manager = manager
        self.commands = Genl()
        self.family, groups = self.commands.resolve("mptcp_pm")
        self.events = Genl()
        self.events.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups["mptcp_pm_events"])
        self.events.sock.setblocking(False)
        self.commands.sock.setblocking(False)
        self.conns = {}          # token -> {"remote": (ip, port), "paths": {path: (time, sport)}}
        self.event_count = 0
        self.overruns = 0
        self.command_errors = {}
        self.joins = 0           # SUB_ESTABLISHED events seen

    # -- events ---------------------------------------------------------------------------
    def pump(self, timeout):
        """Reads events (and command acks) for up to `timeout` seconds or until nothing is left."""
        ready, _, _ = select.select([self.events.sock, self.commands.sock], [], [], timeout)
        for sock in ready:
            while True:
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError as error:
                    if error.errno == errno.ENOBUFS:
                        self.overruns += 1
                        continue
                    raise
                now = time.monotonic()
                for kind, _, body in messages(data):
                    if sock is self.commands.sock:
                        if kind == NLMSG_ERROR:
                            code = -struct.unpack_from("=i", body)[0]
                            if code:
                                name = errno.errorcode.get(code, str(code))
                                self.command_errors[name] = self.command_errors.get(name, 0) + 1
                        continue
                    self.event_count += 1
                    self.on_event(body[0], parse_attrs(body[4:]), now)

    def on_event(self, kind, found, now):
        token = struct.unpack("=I", found[AT_TOKEN])[0] if AT_TOKEN in found else None
        if token is None:
            return
        conn = self.conns.setdefault(token, {"paths": {}, "closed": {}})
        if kind == EV_CREATED:
            conn["created"] = now
        elif kind == EV_ESTABLISHED:
            conn["remote"] = (socket.inet_ntoa(found[AT_DADDR4]), struct.unpack("!H", found[AT_DPORT])[0])
            conn["established"] = now
            if self.manager == "userspace":
                for path in JOINS:
                    self.create(token, path)
        elif kind == EV_SUB_ESTABLISHED:
            self.joins += 1
            conn["paths"][PATH_OF.get(socket.inet_ntoa(found[AT_SADDR4]), "?")] = (now, struct.unpack("!H", found[AT_SPORT])[0])
        elif kind == EV_SUB_CLOSED:
            path = PATH_OF.get(socket.inet_ntoa(found[AT_SADDR4]), "?")
            conn["closed"][path] = now
            conn["paths"].pop(path, None)
        elif kind == EV_CLOSED:
            self.conns.pop(token, None)

    # -- the userspace manager's commands -------------------------------------------------
    def create(self, token, path):
        local, ident = JOINS[path]
        remote, port = self.conns[token]["remote"]
        self.commands.send(self.family, CMD_SUBFLOW_CREATE,
                           attr(PM_ATTR_TOKEN, struct.pack("=I", token))
                           + attr(PM_ATTR_ADDR | NLA_F_NESTED, addr4(local, ident))
                           + attr(PM_ATTR_ADDR_REMOTE | NLA_F_NESTED, addr4(remote, port=port)))

    def destroy(self, token, path):
        local, _ = JOINS[path]
        remote, port = self.conns[token]["remote"]
        sport = self.conns[token]["paths"][path][1]
        self.commands.send(self.family, CMD_SUBFLOW_DESTROY,
                           attr(PM_ATTR_TOKEN, struct.pack("=I", token))
                           + attr(PM_ATTR_ADDR | NLA_F_NESTED, addr4(local, port=sport))
                           + attr(PM_ATTR_ADDR_REMOTE | NLA_F_NESTED, addr4(remote, port=port)))

    def wait_until(self, condition, limit):
        deadline = time.monotonic() + limit
        while not condition() and time.monotonic() < deadline:
            self.pump(max(0.0, min(0.05, deadline - time.monotonic())))
        self.pump(0)
        return condition()


def cpu():
    """This process's CPU and its finished children's: the kernel manager's endpoint commands
    run in `ip`, whose system time is where the kernel walks the connections."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def quantiles(values):
    values = sorted(values)
    if not values:
        return None
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return {"min": round(values[0], 2), "p50": round(pick(0.5), 2), "p90": round(pick(0.9), 2), "max": round(values[-1], 2)}


def token_of(sock):
    # MPTCP_INFO (SOL_MPTCP 284, 1): six u8 counters, u32 flags at 8, u32 token at 12.
    return struct.unpack_from("=I", sock.getsockopt(284, 1, 96), 12)[0]


def phase_fresh(lab, count):
    joins_ms, per_path, missing = [], {p: [] for p in JOINS}, 0
    keep = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        started = time.monotonic()
        sock.connect(SERVER)
        sock.sendall(b"x")   # the server's MP_CAPABLE ack arrives with the answer: ESTABLISHED
        sock.recv(1)
        token = token_of(sock)
        done = lambda: all(p in lab.conns.get(token, {}).get("paths", {}) for p in JOINS)
        if lab.wait_until(done, 2.0):
            paths = lab.conns[token]["paths"]
            for p in JOINS:
                per_path[p].append((paths[p][0] - started) * 1000)
            joins_ms.append((max(paths[p][0] for p in JOINS) - started) * 1000)
        else:
            missing += 1
        keep.append(sock)
    for sock in keep:
        sock.close()
    lab.wait_until(lambda: not lab.conns, 2.0)
    return {"phase": "fresh", "connections": count, "all_joins_ms": quantiles(joins_ms),
            "join_ms": {p: quantiles(v) for p, v in per_path.items()}, "short_of_joins": missing}


def phase_restore(lab, count, endpoint_id):
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.connect(SERVER)
        sock.sendall(b"x")
        sock.recv(1)
        socks.append(sock)
    tokens = [token_of(s) for s in socks]
    have = lambda path, want: sum(path in lab.conns.get(t, {}).get("paths", {}) for t in tokens) == (count if want else 0)
    if not lab.wait_until(lambda: have("eth", True), 10.0):
        return {"phase": "restore", "error": "connections did not all reach eth"}
    result = {"phase": "restore", "connections": count}
    for step, want in (("remove", False), ("restore", True)):
        before = cpu()
        started = time.monotonic()
        if lab.manager == "kernel":
            if want:
                subprocess.run(["ip", "mptcp", "endpoint", "add", "10.1.2.1", "dev", "eth", "id", str(endpoint_id), "subflow"], check=True)
            else:
                subprocess.run(["ip", "mptcp", "endpoint", "delete", "id", str(endpoint_id)], check=True)
        else:
            for token in tokens:
                if want:
                    lab.create(token, "eth")
                else:
                    lab.destroy(token, "eth")
        issued = time.monotonic()
        reached = lab.wait_until(lambda: have("eth", want), 20.0)
        stamps = [lab.conns[t]["paths"]["eth"][0] if want else lab.conns[t]["closed"].get("eth", 0) for t in tokens if t in lab.conns]
        result[step] = {"issue_ms": round((issued - started) * 1000, 2),
                        "last_event_ms": round((max(stamps) - started) * 1000, 2) if reached and stamps else None,
                        "manager_cpu_ms": round((cpu() - before) * 1000, 1), "all_reached": reached}
    for sock in socks:
        sock.close()
    lab.wait_until(lambda: not lab.conns, 5.0)
    return result


def churn_client(seconds):
    """The churn's connections, in a process of their own, so that the manager (this script's
    other process) reads its events while they run, as a daemon beside the proxy would."""
    done = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        sock.connect(SERVER)
        sock.sendall(b"r" * 100)
        got = 0
        while got < 100:
            got += len(sock.recv(100 - got))
        sock.close()
        done += 1
    print(done, flush=True)


def phase_churn(lab, seconds):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before_cpu = usage.ru_utime + usage.ru_stime
    before_events, before_over, before_errors = lab.event_count, lab.overruns, sum(lab.command_errors.values())
    before_joins = lab.joins
    client = subprocess.Popen([sys.executable, __file__, "--churn-client", str(seconds)], stdout=subprocess.PIPE, text=True)
    while client.poll() is None:
        lab.pump(0.05)
    done = int(client.stdout.read())
    lab.wait_until(lambda: not lab.conns, 5.0)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    manager_cpu = usage.ru_utime + usage.ru_stime - before_cpu
    per = lambda value: round(value / max(done, 1), 2)
    return {"phase": "churn", "seconds": seconds, "connections": done, "per_second": round(done / seconds),
            "events_per_connection": per(lab.event_count - before_events),
            "joins_per_connection": per(lab.joins - before_joins),
            "failed_commands_per_connection": per(sum(lab.command_errors.values()) - before_errors),
            "overruns": lab.overruns - before_over,
            "manager_cpu_us_per_connection": round(manager_cpu / max(done, 1) * 1e6, 1) if lab.manager == "userspace" else None}


def serve():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(SERVER)
    listener.listen(1024)
    listener.setblocking(False)
    poller, conns = select.epoll(), {}
    poller.register(listener, select.EPOLLIN)
    print("ready", flush=True)
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    poller.register(conn, select.EPOLLIN)
                continue
            conn = conns[fd]
            try:
                data = conn.recv(4096)
            except (BlockingIOError, ConnectionError):
                data = b"" if fd in conns else None
            if data:
                conn.send(data)   # echo: 1 byte or 100, always fits the send buffer
            else:
                poller.unregister(fd)
                conns.pop(fd).close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manager", choices=["kernel", "userspace"])
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--fresh", type=int, default=50)
    parser.add_argument("--restore", type=int, default=200)
    parser.add_argument("--churn", type=float, default=5.0)
    parser.add_argument("--eth-endpoint-id", type=int, default=2)
    parser.add_argument("--churn-client", type=float)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.churn_client:
        return churn_client(args.churn_client)
    lab = Lab(args.manager)
    for line in (phase_fresh(lab, args.fresh), phase_restore(lab, args.restore, args.eth_endpoint_id), phase_churn(lab, args.churn)):
        line["manager"] = args.manager
        if lab.command_errors:
            line["command_errors"] = dict(lab.command_errors)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
