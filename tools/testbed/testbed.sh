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
# Impairments (docs/testbed.md), per path, at start (DELAY_WIFI=5 DELAY_ETH=10 DELAY_CELL=40, one-way
# milliseconds; LOSS_WIFI=5, percent one way each; 0 or unset: off) or mid-run:
#   testbed.sh impair PREFIX PATH delay MS | loss PERCENT | blackhole on|off | rate RATE
# Delay: there is no netem in this kernel; each side's ingress of the path goes through an
# NFQUEUE (iptables-nft, queue-bypass) to tools/testbed/delayline, which holds each verdict MS
# ms. Ingress, not egress: a sender's own queued packets count against TCP small queues and
# cap its window (measured: 2.2 Mbit/s at 40 ms RTT on egress, 36.9 on ingress). Loss: nftables
# `numgen random`. Black hole: the link stays up, nftables drops everything on it.
#
# Usage: testbed.sh up [PREFIX] | down [PREFIX] | down-all | exec [PREFIX] NS CMD... | show [PREFIX] | impair ...
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
    local path_name value
    for path_name in wifi eth cell; do
        value=DELAY_${path_name^^}; [[ ${!value:-0} -gt 0 ]] && set_delay "$path_name" "${!value}"
        value=LOSS_${path_name^^}; [[ ${!value:-0} -gt 0 ]] && set_filter "$path_name" loss "${!value}"
    done
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

# The delay line, compiled on first use (C, libmnl) into the state directory.
delayline_binary() {
    local src bin
    src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/delayline/main.c
    bin=$STATE_DIR/mpx-delayline
    mkdir -p "$STATE_DIR"
    if [[ ! -x $bin || $src -nt $bin ]]; then
        local cc=${CC:-}
        [[ -n $cc ]] || cc=$(command -v cc || command -v gcc || command -v clang) || die "no C compiler for the delay line"
        # Tests bring testbeds up in parallel: each compiles to its own file and renames it into
        # place (atomic), so none runs a binary another is still writing (a shared .tmp did).
        local tmp
        tmp=$(mktemp "$bin.XXXXXX")
        "$cc" -O2 -Wall -o "$tmp" "$src" -lmnl && mv -f "$tmp" "$bin" || { rm -f "$tmp"; die "cannot build the delay line"; }
    fi
    echo "$bin"
}

# Queue number of a path's delay line (one per path and namespace).
path_queue() { case $1 in wifi) echo 11 ;; eth) echo 12 ;; cell) echo 13 ;; *) die "unknown path $1" ;; esac; }

set_delay() {  # set_delay PATH MS (one way, applied at both ends' ingress)
    local path=$1 ms=$2 q bin n pidfile
    q=$(path_queue "$path")
    for n in gw vps; do
        pidfile=$STATE_DIR/$P.delay.$n.$path
        if [[ -f $pidfile ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
        ns "$n" iptables -t mangle -D PREROUTING -i "$path" -j NFQUEUE --queue-num "$q" --queue-bypass 2>/dev/null || true
    done
    [[ $ms -gt 0 ]] || return 0
    bin=$(delayline_binary)
    for n in gw vps; do
        pidfile=$STATE_DIR/$P.delay.$n.$path
        # No inherited stdout: whoever reads the script's output would wait for the daemon to end.
        ip netns exec "$P-$n" "$bin" --queue "$q" --delay-ms "$ms" </dev/null >/dev/null 2>&1 &
        echo $! > "$pidfile"
    done
    sleep 0.1  # bound before packets are queued to it (bypass lets them through until then)
    for n in gw vps; do ns "$n" iptables -t mangle -A PREROUTING -i "$path" -j NFQUEUE --queue-num "$q" --queue-bypass; done
}

# Loss and black holes live in one nftables table per namespace, rebuilt from the state files.
set_filter() {  # set_filter PATH loss PERCENT | PATH blackhole on|off
    local path=$1 kind=$2 value=$3 n
    echo "$value" > "$STATE_DIR/$P.$kind.$path"
    for n in gw vps; do
        local rules_in="" f p v
        for f in "$STATE_DIR/$P".loss.* "$STATE_DIR/$P".blackhole.*; do
            [[ -f $f ]] || continue
            p=${f##*.}; v=$(cat "$f")
            case $f in
                *.loss.*) [[ $v -gt 0 ]] && rules_in+="iifname \"$p\" numgen random mod 100 < $v drop; " ;;
                # On arrival at either end only, as a dead link would: a drop in our own
                # egress hook fails the send locally (EPERM), so TCP never counts the segment
                # as sent and no sender sees data outstanding, which no real black hole does.
                *.blackhole.*) [[ $v == on ]] && rules_in+="iifname \"$p\" drop; " ;;
            esac
        done
        ns "$n" nft -f - <<NFT
table inet mpx_impair {}
delete table inet mpx_impair
table inet mpx_impair {
    chain in { type filter hook prerouting priority -300; policy accept; $rules_in}
}
NFT
    done
}

impair() {  # impair PREFIX PATH delay MS | loss PERCENT | blackhole on|off | rate RATE
    P=$1; local path=$2 kind=$3 value=$4
    path_queue "$path" >/dev/null
    case $kind in
        delay) set_delay "$path" "$value" ;;
        loss) set_filter "$path" loss "$value" ;;
        blackhole) set_filter "$path" blackhole "$value" ;;
        rate) shape gw "$path" "$value"; shape vps "$path" "$value" ;;
        *) die "impair: delay MS | loss PERCENT | blackhole on|off | rate RATE" ;;
    esac
}

down() {
    P=${1:-$(current_prefix)}
    local f
    for f in "$STATE_DIR/$P".delay.*; do
        # A delay line that already exited must not stop the teardown (set -e would end it here
        # and leave the namespaces behind).
        [[ -f $f ]] && { kill "$(cat "$f")" 2>/dev/null || true; }
        rm -f "$f"
    done
    rm -f "$STATE_DIR/$P".loss.* "$STATE_DIR/$P".blackhole.*
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
    impair) [[ $# -eq 4 ]] || die "usage: impair PREFIX PATH delay MS | loss PERCENT | blackhole on|off | rate RATE"; impair "$@" ;;
    show)
        P=${1:-$(current_prefix)}
        for n in gw vps; do echo "== $P-$n"; ip -n "$P-$n" -br addr; ip -n "$P-$n" mptcp endpoint show; ip -n "$P-$n" mptcp limits show; done ;;
    *) echo "usage: $0 up [PREFIX] | down [PREFIX] | down-all | exec [PREFIX] NS CMD... | show [PREFIX] | impair PREFIX PATH KIND VALUE" >&2; exit 2 ;;
esac
