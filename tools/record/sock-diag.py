#!/usr/bin/env python3
"""Records sock_diag dumps (MPTCP connections and TCP sockets) from the running kernel, twice,
INTERVAL seconds apart, for the Stats tests' fixtures. It parses the bytes with its own small
decoder (independent of the Swift/C one) and stores the per-subflow rates it computes, so the
tests compare two implementations on the same kernel bytes.

usage: ip netns exec NS tools/record/sock-diag.py [INTERVAL] > Tests/StatsTests/Fixtures/NAME.json
"""
import json, socket, struct, sys, time

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLMSG_DONE, NLMSG_ERROR = 4, 20, 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
INET_DIAG_INFO, INET_DIAG_REQ_PROTOCOL, INET_DIAG_ULP_INFO = 2, 3, 19
STATES = 0xFFFFFFFF & ~((1 << 6) | (1 << 12))


def request(sock, seq, family, protocol):
    attrs = b""
    proto = protocol
    if protocol > 255:
        attrs = struct.pack("=HHI", 8, INET_DIAG_REQ_PROTOCOL, protocol)
        proto = 0
    body = struct.pack("=BBBxI", family, proto, 1 << (INET_DIAG_INFO - 1), STATES) + b"\0" * 48 + attrs
    sock.send(struct.pack("=IHHII", 16 + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    datagrams = []
    while True:
        data = sock.recv(65536)
        datagrams.append(data.hex())
        offset, done = 0, False
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind in (NLMSG_DONE, NLMSG_ERROR):
                done = True
            offset += (length + 3) & ~3
        if done:
            return datagrams


def attributes(data, start, end):
    out = {}
    while start + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, start)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[start + 4:start + length]
        start += (length + 3) & ~3
    return out


def sockets(datagrams, protocol):
    found = []
    for text in datagrams:
        data = bytes.fromhex(text)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == SOCK_DIAG_BY_FAMILY:
                msg = offset + 16
                state = data[msg + 1]
                cookie = struct.unpack_from("=Q", data, msg + 4 + 36 + 4)[0]
                attrs = attributes(data, msg + 72, offset + length)
                entry = {"state": state, "cookie": cookie}
                info = attrs.get(INET_DIAG_INFO, b"")
                if protocol == 262 and len(info) >= 80:
                    entry["token"] = struct.unpack_from("=I", info, 12)[0]
                    entry["bytes_acked"] = struct.unpack_from("=Q", info, 72)[0]
                    entry["bytes_received"] = struct.unpack_from("=Q", info, 64)[0]
                elif protocol == 6 and len(info) >= 136:
                    entry["bytes_acked"], entry["bytes_received"] = struct.unpack_from("=QQ", info, 120)
                ulp = attrs.get(INET_DIAG_ULP_INFO)
                if ulp:
                    inner = attributes(ulp, 0, len(ulp))
                    if inner.get(1, b"").rstrip(b"\0") == b"mptcp" and 3 in inner:
                        sub = attributes(inner[3], 0, len(inner[3]))
                        entry["token_loc"] = struct.unpack("=I", sub[2])[0]
                found.append(entry)
            offset += (length + 3) & ~3
    return found


def sample(sock, seq):
    taken = {"time_us": time.monotonic_ns() // 1000}
    taken["mptcp"] = request(sock, seq, socket.AF_INET, 262)
    taken["tcp"] = request(sock, seq + 1, socket.AF_INET, 6)
    return taken


def main():
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    first = sample(sock, 1)
    time.sleep(interval)
    second = sample(sock, 3)
    seconds = (second["time_us"] - first["time_us"]) / 1e6
    before = {s["cookie"]: s for s in sockets(first["tcp"], 6) if "token_loc" in s}
    expected = []
    for s in sockets(second["tcp"], 6):
        if "token_loc" in s and s["cookie"] in before:
            b = before[s["cookie"]]
            expected.append({"cookie": s["cookie"], "token": s["token_loc"],
                             "tx_bps": (s["bytes_acked"] - b["bytes_acked"]) * 8 / seconds,
                             "rx_bps": (s["bytes_received"] - b["bytes_received"]) * 8 / seconds})
    json.dump({"kernel": open("/proc/sys/kernel/osrelease").read().strip(),
               "samples": [first, second], "expected_subflow_rates": expected}, sys.stdout, indent=1)
    print()


main()
