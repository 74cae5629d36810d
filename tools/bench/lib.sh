# Shared by the benchmark scripts and tools/demo: build, testbed, proxy processes, loads.
# Everything started here is stopped, and the testbed removed, on exit (trap cleanup).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.build/release
TB=$ROOT/tools/testbed/testbed.sh
PIDS=()
P=""
# Runs per figure (min/median/max are printed over them) and where the JSON-lines copy goes.
RUNS=${RUNS:-3}
BENCH_OUT=${BENCH_OUT:-$ROOT/.build/bench}
JSONL=${JSONL:-$BENCH_OUT/results.jsonl}

build_release() {
    # mptcp-proxy as the package ships it (the Swift runtime linked in), so that B5's memory
    # figures are what users run. The load tools are built the same way: a build that differs
    # in that flag rebuilds every module (minutes), and tools/package/deb/build uses it too.
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --product mptcp-proxy >&2 &&
        swift build -c release --static-swift-stdlib --product mptcp-bench >&2)
}

cleanup() {
    testbed_down
    # An if, not `[[ ]] && rm`: as the EXIT trap's last command, a false test was the script's
    # exit status (B3 "failed" with rc 1 after printing its table).
    if [[ -n ${WORK:-} ]]; then rm -rf "$WORK"; fi
}

# testbed_up [SHAPE]: SHAPE=none for unshaped links.
testbed_up() {
    local ns dev  # callers have their own `ns`: bash's dynamic scope would hand them ours
    P=mpxb$$
    WORK=${WORK:-$(mktemp -d)}
    "$TB" up "$P" >/dev/null 2>&1
    if [[ ${1:-} == none ]]; then
        for ns in gw vps; do for dev in wifi eth cell; do tc -n "$P-$ns" qdisc del dev "$dev" root 2>/dev/null || true; done; done
    fi
    # CONGESTION=cubic (or reno, bbr): every namespace's default congestion control; unset, the
    # host's (a new namespace inherits it: bbr on this machine).
    if [[ -n ${CONGESTION:-} ]]; then
        for ns in lan gw vps origin; do ip netns exec "$P-$ns" sysctl -qw net.ipv4.tcp_congestion_control="$CONGESTION"; done
    fi
    # Every connection starts from the kernel's defaults, not from what the last one to the
    # same address left in the TCP metrics cache (ssthresh, RTT): chains run one after another
    # on one testbed, and the gateway's subflows to the server share their addresses whatever
    # the port.
    for ns in lan gw vps origin; do ip netns exec "$P-$ns" sysctl -qw net.ipv4.tcp_no_metrics_save="${TCP_METRICS_SAVE:-1}"; done
    [[ -f $WORK/key ]] || (umask 077; printf 'bench %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$WORK/key")
}

in_ns() { ip netns exec "$P-$1" "${@:2}"; }

start_bg() {  # start_bg NS CMD... ; remembers the pid
    ip netns exec "$P-$1" "${@:2}" >>"$WORK/log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

# The peers users run today, from Debian's packages: shadowsocks-libev and HAProxy (under
# mptcpize, from mptcpd, which turns their TCP sockets into MPTCP ones).
install_peers() {
    local missing=()
    for p in shadowsocks-libev haproxy mptcpd; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [[ ${#missing[@]} -gt 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    systemctl stop haproxy shadowsocks-libev 2>/dev/null || true
}

# start_ss TARGET: ss-server on vps, ss-tunnel on gw:8081 forwarding to TARGET through it.
# aes-256-gcm: shadowsocks-libev's fastest cipher here; --mptcp makes both legs MPTCP (checked
# by mptcp_share); ss-tunnel forwards a fixed destination, like our port forward. -t 3600: its
# idle timeout (60 s by default) would close the connections B5 holds idle.
start_ss() {
    start_bg vps ss-server -s 10.9.9.9 -p 8388 -k bench-password -m aes-256-gcm --mptcp -u -t 3600
    VPS_PID=$LAST_PID
    start_bg gw ss-tunnel -s 10.9.9.9 -p 8388 -l 8081 -b 10.10.0.1 -L "$1" -k bench-password -m aes-256-gcm --mptcp -t 3600
    GW_PID=$LAST_PID
    ENTRY=10.10.0.1:8081
}

# start_haproxy TARGET: HAProxy on gw:8082 → HAProxy on vps:8443 → TARGET, both under
# mptcpize (so the gw→vps leg is MPTCP). maxconn 8000: two descriptors a connection within
# the 20,000 open-file limit.
start_haproxy() {
    local side
    for side in gw vps; do
        {
            printf 'global\n    maxconn 8000\ndefaults\n    mode tcp\n    timeout connect 10s\n'
            printf '    timeout client 300s\n    timeout server 300s\n'
            if [[ $side == gw ]]; then
                printf 'frontend lan\n    bind 10.10.0.1:8082\n    default_backend next\nbackend next\n    server vps 10.9.9.9:8443\n'
            else
                printf 'frontend gw\n    bind 10.9.9.9:8443\n    default_backend next\nbackend next\n    server origin %s\n' "$1"
            fi
        } >"$WORK/haproxy-$side.cfg"
    done
    start_bg vps mptcpize run haproxy -db -f "$WORK/haproxy-vps.cfg"
    VPS_PID=$LAST_PID
    start_bg gw mptcpize run haproxy -db -f "$WORK/haproxy-gw.cfg"
    GW_PID=$LAST_PID
    ENTRY=10.10.0.1:8082
}

# start_proxy TARGET [client args...]: mptcp-proxy server on vps:4443, client on gw:8080.
# PROXY_ARGS: more options for both (say --loops 1, to compare).
# The server's per-source new-connection rate (1,000/s by default, against one source flooding
# it) is lifted: the benchmarks' one gateway is a legitimate client far busier than that, and
# the peers compared have no such limit. So is the per-key share (4,096 by default): B5 holds
# 5,000 connections from its one gateway.
# write_server_config: the benchmark server's $WORK/server.toml (limits lifted as said above).
write_server_config() {
    cat >"$WORK/server.toml" <<CONF
listen = "10.9.9.9:4443"
keys = "$WORK/key"
new-connections-per-source-per-s = 1_000_000
max-connections-per-key = 8_192
[[rule]]
action = "allow"
to = ["10.20.0.0/24"]
CONF
}

start_proxy() {
    local target=$1; shift
    write_server_config
    start_bg vps "$BIN/mptcp-proxy" server --config "$WORK/server.toml" --log-level warning ${PROXY_ARGS:-}
    VPS_PID=$LAST_PID
    # The client's first health check must find the server listening, or it reports it down
    # and resets LAN connections until enough checks pass (`rise`).
    wait_for_port gw 10.9.9.9:4443
    start_bg gw "$BIN/mptcp-proxy" client --listen 10.10.0.1:8080 --to "$target" --server 10.9.9.9:4443 --key-file "$WORK/key" --log-level warning --no-path-manager ${PROXY_ARGS:-} "$@"
    GW_PID=$LAST_PID
    ENTRY=10.10.0.1:8080
}

# start_relays TARGET KIND...: several chains side by side on one testbed (their ports and
# listeners differ: proxy 8080/4443, ss 8081/8388, haproxy 8082/8443), each ready; fills
# ENTRY_OF, GW_PID_OF and VPS_PID_OF by kind. An idle chain costs the others nothing.
declare -A ENTRY_OF GW_PID_OF VPS_PID_OF
start_relays() {
    local target=$1 kind; shift
    for kind in "$@"; do
        start_relay "$kind" "$target"
        ENTRY_OF[$kind]=$ENTRY GW_PID_OF[$kind]=$GW_PID VPS_PID_OF[$kind]=$VPS_PID
    done
}

# start_relay KIND TARGET: KIND is proxy, ss or haproxy; waits until the LAN can connect.
start_relay() {
    case $1 in
        proxy) start_proxy "$2" ;;
        ss) start_ss "$2" ;;
        haproxy) start_haproxy "$2" ;;
        *) echo "unknown relay $1" >&2; return 1 ;;
    esac
    wait_for_port lan "$ENTRY"
}

relay_label() {
    case $1 in
        direct) echo "direct kernel MPTCP gw->vps" ;;
        proxy) echo "mptcp-proxy" ;;
        ss) echo "shadowsocks-libev --mptcp" ;;
        haproxy) echo "HAProxy under mptcpize" ;;
    esac
}

# testbed_down: stops what was started and removes the testbed (the work directory stays).
testbed_down() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    [[ -n $P ]] && "$TB" down "$P" 2>/dev/null || true
    P=""
}

# wait_for_port NS ADDR:PORT
wait_for_port() {
    local i
    for i in $(seq 50); do
        in_ns "$1" bash -c "exec 3<>/dev/tcp/${2%:*}/${2##*:}" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $2; log:" >&2; cat "$WORK/log" >&2; return 1
}

# mptcp_share: MP_CAPABLE SYNs the vps namespace has received since the testbed came up (its
# counters are its own), as a share of CONNECTIONS: 1.00 when every connection of the chain
# crossed the gw→vps leg over MPTCP.
mptcp_share() {
    local syns
    syns=$(in_ns vps nstat -az MPTcpExtMPCapableSYNRX 2>/dev/null | awk '/MPCapableSYNRX/ {print $2}')
    awk -v s="${syns:-0}" -v n="$1" 'BEGIN { if (n > 0) printf "%.2f", s / n; else print "n/a" }'
}

# median_columns: the median of each numeric column of the lines on stdin.
median_columns() {
    awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; if (NF > nf) nf = NF }
         END { for (i = 1; i <= nf; i++) { n = 0; for (r = 1; r <= NR; r++) a[++n] = v[i, r] + 0
               for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
               printf "%s%s", (i > 1 ? " " : ""), a[int((n + 1) / 2)] } print "" }'
}

# start_chain: the sinks and the mptcp-proxy chain to CHAIN_TARGET (default the origin sink).
start_chain() {
    start_bg origin "$BIN/mptcp-bench" sink --listen 10.20.0.2:5201
    start_bg vps "$BIN/mptcp-bench" sink --listen 10.9.9.9:5202 --mptcp
    start_proxy "${CHAIN_TARGET:-10.20.0.2:5201}"
    CLIENT_PID=$GW_PID
    SERVER_PID=$VPS_PID
    wait_for_port lan "$ENTRY"
}

# load NS TARGET DIRECTION SECONDS [extra args] -> Mbit/s
load() {
    in_ns "$1" "$BIN/mptcp-bench" load --to "$2" --direction "$3" --seconds "$4" "${@:5}" | awk '{print $1}'
    wait_quiet
}

# path_bytes: bytes the gateway's three uplinks have carried so far, both ways.
path_bytes() {
    # printf, not print: awk prints sums past 2^31 as 7.38e+10, which bash's (( )) refuses.
    in_ns gw cat /sys/class/net/{wifi,eth,cell}/statistics/{rx,tx}_bytes | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# wait_quiet: returns once the uplinks carry less than 64 KB in 200 ms (at most 15 s). A load
# ends when its window does, but the bytes its sender had buffered (socket buffers of
# megabytes, a relay's pipes) still drain afterwards: measured, the chain that ran next got
# 0.78-0.82 of the paths in that direction where it got 0.93-0.97 when it ran first.
wait_quiet() {
    local before after i
    before=$(path_bytes)
    for ((i = 0; i < 75; i++)); do
        sleep 0.2
        after=$(path_bytes)
        (( after - before < 65536 )) && return 0
        before=$after
    done
    echo "warning: uplinks still busy 15 s after a load" >&2
}

# cpu_seconds PID: user+system CPU time of a process so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

# spread: numbers on stdin, one a line -> "min median max" (n/a when there are none).
spread() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a n/a n/a"; exit }
                                      printf "%s %s %s\n", v[1], v[int((NR + 1) / 2)], v[NR] }'
}

# mmm "min median max" -> "min/median/max" for a table cell.
mmm() { tr ' ' '/' <<<"$1"; }

# record BENCH KEY=VALUE...: one JSON line in $JSONL (numbers stay numbers, the rest strings),
# stamped with the time and the suite's run id, for machines to read what the tables show.
record() {
    mkdir -p "$(dirname "$JSONL")"
    local bench=$1 kv key value line
    shift
    line=$(printf '{"bench":"%s","time":"%s","run":"%s"' "$bench" "$(date -u +%FT%TZ)" "${SUITE_RUN:-$$}")
    for kv in "$@"; do
        key=${kv%%=*} value=${kv#*=}
        if [[ $value =~ ^-?[0-9]+([.][0-9]+)?$ ]]; then line+=$(printf ',"%s":%s' "$key" "$value")
        else line+=$(printf ',"%s":"%s"' "$key" "${value//\"/\\\"}"); fi
    done
    printf '%s}\n' "$line" >>"$JSONL"
}

# print_machine / print_paths / print_config: what a reader needs to reproduce a table:
# kernel, CPU, versions; rates and delays.
print_machine() {
    local ss hap
    ss=$(ss-server -h 2>&1 | awk '/shadowsocks-libev/ {print $2; exit}') || true
    hap=$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}') || true
    printf '  kernel %s; %s cores, %s; mptcp-proxy %s; shadowsocks-libev %s; HAProxy %s\n' \
        "$(uname -r)" "$(nproc)" "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
        "$("$BIN/mptcp-proxy" --version 2>/dev/null)" "${ss:-absent}" "${hap:-absent}"
}
print_paths() {
    printf '  paths wifi %s, eth %s, cell %s; one-way delay wifi %s, eth %s, cell %s ms; congestion control %s\n' \
        "${RATE_WIFI:-40mbit}" "${RATE_ETH:-30mbit}" "${RATE_CELL:-20mbit}" "${DELAY_WIFI:-0}" "${DELAY_ETH:-0}" "${DELAY_CELL:-0}" \
        "${CONGESTION:-$(sysctl -n net.ipv4.tcp_congestion_control)}"
}
print_config() { print_machine; print_paths; }

# proxy_census PID NS: what a proxy process holds, for the load test and the soak:
# "fds pipe-fds lent-pipes idle-pipes armed-timers rss-kb" (its /metrics on 127.0.0.1:9109 in NS).
proxy_census() {
    local metrics
    metrics=$(in_ns "$2" curl -s "http://127.0.0.1:9109/metrics")
    echo "$(ls "/proc/$1/fd" | wc -l) $(find "/proc/$1/fd" -lname 'pipe:*' 2>/dev/null | wc -l)" \
        "$(awk '/^mptcp_proxy_loop_pipes.*state="lent"/ {l = $NF} /^mptcp_proxy_loop_pipes.*state="idle"/ {i = $NF}
               /^mptcp_proxy_loop_timers/ {t = $NF} END {print l + 0, i + 0, t + 0}' <<<"$metrics")" \
        "$(awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
