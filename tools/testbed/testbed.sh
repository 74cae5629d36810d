#!/usr/bin/env bash
# The mptcp-proxy testbed: five network namespaces joined by veth links.
#
#   lan ──── gw ══ wifi (tbf $RATE_WIFI) ══ vps ──── origin
#   10.10.0.2   ══ eth  (tbf $RATE_ETH)  ══   10.20.0.1/.2
#               ══ cell (tbf $RATE_CELL) ══
#
#   lan     10.10.0.2   the LAN host (plain TCP), default route via gw
#   gw      10.10.0.1   mptcp-proxy client; wifi 10.1.1.1, eth 10.1.2.1, cell 10.1.3.1,
#                       one routing table and rule per source address, MPTCP endpoints
#   vps     10.9.9.9    (on lo) mptcp-proxy server; path ends 10.1.{1,2,3}.2; origin side 10.20.0.1
#   origin  10.20.0.2   ordinary TCP servers
#
# IPv6 beside it (unique-local, no DAD): lan fd00:10::2 (default via gw fd00:10::1), origin
# fd00:20::2 (vps side fd00:20::1), the server fd00:9::9 on vps's lo; with IPV6_PATH=1 it is
# reached over wifi (gw fd00:1:1::1, vps fd00:1:1::2; no MPTCP endpoint: an IPv6 connection has
# one path). Off by default: a path manager would take that address as a fourth endpoint.
#
# Every name starts with a per-run prefix so runs never collide, and `down` removes all
# of a prefix's namespaces (their veths go with them). Rates are tbf, both directions;
# there is no netem here, so paths differ in rate, hardly in delay.
#
# Usage: testbed.sh up [PREFIX] | down [PREFIX] | down-all | exec [PREFIX] NS CMD... | show [PREFIX]
set -euo pipefail

STATE_DIR=/run/mptcp-proxy-testbed
RATE_WIFI=${RATE_WIFI:-40mbit}
RATE_ETH=${RATE_ETH:-30mbit}
RATE_CELL=${RATE_CELL:-20mbit}
# ENDPOINTS=all: the script itself adds gw's MPTCP endpoints and per-source routing tables.
# ENDPOINTS=none leaves both to a path manager (its tests, `mptcp-proxy pm`).
ENDPOINTS=${ENDPOINTS:-all}
IPV6_PATH=${IPV6_PATH:-0}

die() { echo "testbed: $*" >&2; exit 1; }

current_prefix() {
    [[ -f $STATE_DIR/current ]] || die "no testbed is up (run tools/testbed/up)"
    cat "$STATE_DIR/current"
}

ns() { ip netns exec "$P-$1" "${@:2}"; }

shape() {  # shape NS DEV RATE
    ip -n "$P-$1" link set "$2" up
    tc -n "$P-$1" qdisc replace dev "$2" root tbf rate "$3" burst 32kb latency 50ms
}

up() {
    P=${1:-mpx$$}
    [[ ${#P} -le 12 ]] || die "prefix '$P' is longer than 12 characters"
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces)"
    trap 'echo "testbed: setup failed, removing $P" >&2; down "$P"' ERR
    for n in lan gw vps origin; do
        ip netns add "$P-$n"
        ip -n "$P-$n" link set lo up
        ns "$n" sysctl -qw net.ipv4.ip_forward=0
    done
    # LAN host <-> gateway
    ip -n "$P-lan" link add gw0 type veth peer name lan0 netns "$P-gw"
    ip -n "$P-lan" addr add 10.10.0.2/24 dev gw0
    ip -n "$P-lan" link set gw0 up
    ip -n "$P-lan" route add default via 10.10.0.1
    ip -n "$P-gw" addr add 10.10.0.1/24 dev lan0
    ip -n "$P-gw" link set lan0 up
    # VPS <-> origin
    ip -n "$P-vps" link add origin0 type veth peer name vps0 netns "$P-origin"
    ip -n "$P-vps" addr add 10.20.0.1/24 dev origin0
    ip -n "$P-vps" link set origin0 up
    ip -n "$P-origin" addr add 10.20.0.2/24 dev vps0
    ip -n "$P-origin" link set vps0 up
    ip -n "$P-origin" route add default via 10.20.0.1
    ip -n "$P-vps" addr add 10.9.9.9/32 dev lo
    ip -n "$P-lan" addr add fd00:10::2/64 dev gw0 nodad
    ip -n "$P-lan" -6 route add default via fd00:10::1
    ip -n "$P-gw" addr add fd00:10::1/64 dev lan0 nodad
    ip -n "$P-vps" addr add fd00:20::1/64 dev origin0 nodad
    ip -n "$P-origin" addr add fd00:20::2/64 dev vps0 nodad
    ip -n "$P-origin" -6 route add default via fd00:20::1
    ip -n "$P-vps" addr add fd00:9::9/128 dev lo
    # Three shaped paths gw <-> vps, each with its own routing table on gw.
    local i=1 table
    for path in wifi eth cell; do
        local rate_var="RATE_${path^^}"
        ip -n "$P-gw" link add "$path" type veth peer name "$path" netns "$P-vps"
        ip -n "$P-gw" addr add "10.1.$i.1/24" dev "$path"
        ip -n "$P-vps" addr add "10.1.$i.2/24" dev "$path"
        shape gw "$path" "${!rate_var}"
        shape vps "$path" "${!rate_var}"
        if [[ $ENDPOINTS == all ]]; then
            table=$((100 + i))
            ip -n "$P-gw" route add default via "10.1.$i.2" dev "$path" table "$table"
            ip -n "$P-gw" rule add from "10.1.$i.1" lookup "$table" priority $((100 + i))
        fi
        i=$((i + 1))
    done
    ip -n "$P-gw" route add 10.9.9.9/32 via 10.1.1.2 dev wifi
    if [[ $IPV6_PATH == 1 ]]; then
        ip -n "$P-gw" addr add fd00:1:1::1/64 dev wifi nodad
        ip -n "$P-vps" addr add fd00:1:1::2/64 dev wifi nodad
        ip -n "$P-gw" -6 route add fd00:9::9/128 via fd00:1:1::2 dev wifi
    fi
    # MPTCP: room for a subflow per path on both ends; TFO server side on vps.
    ip -n "$P-gw" mptcp limits set subflows 8 add_addr_accepted 8
    ip -n "$P-vps" mptcp limits set subflows 8 add_addr_accepted 8
    if [[ $ENDPOINTS == all ]]; then
        ip -n "$P-gw" mptcp endpoint add 10.1.1.1 dev wifi subflow
        ip -n "$P-gw" mptcp endpoint add 10.1.2.1 dev eth subflow
        ip -n "$P-gw" mptcp endpoint add 10.1.3.1 dev cell subflow
    fi
    ns vps sysctl -qw net.ipv4.tcp_fastopen=3
    ns gw sysctl -qw net.ipv4.tcp_fastopen=3
    wait_links_up
    trap - ERR
    mkdir -p "$STATE_DIR"
    echo "$P" > "$STATE_DIR/current"
    echo "$P" > "$STATE_DIR/$P"
    echo "testbed $P up: wifi $RATE_WIFI, eth $RATE_ETH, cell $RATE_CELL (namespaces $P-lan $P-gw $P-vps $P-origin)" >&2
    echo "$P"
}

wait_links_up() {  # veth carrier comes up asynchronously; tests must not race it
    local tries=0 n dev
    while :; do
        local all=1
        for pair in lan:gw0 gw:lan0 gw:wifi gw:eth gw:cell vps:wifi vps:eth vps:cell vps:origin0 origin:vps0; do
            n=${pair%%:*}; dev=${pair#*:}
            if ! ip -n "$P-$n" -br link show "$dev" | grep -q ' UP '; then all=0; fi
        done
        [[ $all == 1 ]] && return 0
        tries=$((tries + 1))
        [[ $tries -lt 100 ]] || { echo "testbed: links did not come up" >&2; return 1; }
        sleep 0.05
    done
}

down() {
    P=${1:-$(current_prefix)}
    for n in lan gw vps origin; do
        ip netns del "$P-$n" 2>/dev/null || true
    done
    rm -f "$STATE_DIR/$P"
    if [[ -f $STATE_DIR/current && $(cat "$STATE_DIR/current") == "$P" ]]; then rm -f "$STATE_DIR/current"; fi
}

down_all() {  # every testbed any run left behind
    local p
    for p in $(ip netns list | awk '{print $1}' | sed -n 's/^\(mpx[A-Za-z0-9_]*\)-\(lan\|gw\|vps\|origin\)$/\1/p' | sort -u); do
        echo "testbed: removing $p" >&2
        down "$p"
    done
}

cmd=${1:-}
shift || true
case $cmd in
    up) up "$@" ;;
    down) down "$@" ;;
    down-all) down_all ;;
    exec)
        if [[ $# -ge 2 && -e /var/run/netns/$1-$2 ]]; then P=$1; shift; else P=$(current_prefix); fi
        n=$1; shift
        exec ip netns exec "$P-$n" "$@" ;;
    show)
        P=${1:-$(current_prefix)}
        for n in gw vps; do echo "== $P-$n"; ip -n "$P-$n" -br addr; ip -n "$P-$n" mptcp endpoint show; ip -n "$P-$n" mptcp limits show; done ;;
    *) echo "usage: $0 up [PREFIX] | down [PREFIX] | down-all | exec [PREFIX] NS CMD... | show [PREFIX]" >&2; exit 2 ;;
esac
