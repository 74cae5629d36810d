# Shared by the benchmark scripts and tools/demo: build, testbed, proxy processes, loads.
# Everything started here is stopped, and the testbed removed, on exit (trap cleanup).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/.build/release
TB=$ROOT/tools/testbed/testbed.sh
PIDS=()
P=""

build_release() {
    (cd "$ROOT" && swift build -c release --product mptcp-proxy >&2 && swift build -c release --product mptcp-bench >&2)
}

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n $P ]] && "$TB" down "$P" 2>/dev/null || true
    [[ -n ${WORK:-} ]] && rm -rf "$WORK"
}

# testbed_up [SHAPE]: SHAPE=none for unshaped links.
testbed_up() {
    P=mpxb$$
    WORK=${WORK:-$(mktemp -d)}
    "$TB" up "$P" >/dev/null 2>&1
    if [[ ${1:-} == none ]]; then
        for ns in gw vps; do for dev in wifi eth cell; do tc -n "$P-$ns" qdisc del dev "$dev" root 2>/dev/null || true; done; done
    fi
    [[ -f $WORK/key ]] || printf 'bench %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$WORK/key"
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

# start_peers: ss-tunnel on gw:8081 and HAProxy on gw:8082, both to origin:5203 through vps.
start_peers() {
    # aes-256-gcm: shadowsocks-libev's fastest cipher here. --mptcp needs IPPROTO_MPTCP support
    # (checked by mptcp_check); ss-tunnel forwards a fixed destination, like our port forward.
    start_bg vps ss-server -s 10.9.9.9 -p 8388 -k bench-password -m aes-256-gcm --mptcp -u
    SS_SERVER_PID=$LAST_PID
    start_bg gw ss-tunnel -s 10.9.9.9 -p 8388 -l 8081 -b 10.10.0.1 -L 10.20.0.2:5203 -k bench-password -m aes-256-gcm --mptcp
    SS_TUNNEL_PID=$LAST_PID
    local target=${PEER_TARGET:-10.20.0.2:5203}
    cat >"$WORK/haproxy-gw.cfg" <<HAP
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 10s
    timeout client 300s
    timeout server 300s
frontend lan
    bind 10.10.0.1:8082
    default_backend vps
backend vps
    server vps 10.9.9.9:8443
HAP
    cat >"$WORK/haproxy-vps.cfg" <<HAP
global
    maxconn 8000
defaults
    mode tcp
    timeout connect 10s
    timeout client 300s
    timeout server 300s
frontend gw
    bind 10.9.9.9:8443
    default_backend origin
backend origin
    server origin $target
HAP
    start_bg vps mptcpize run haproxy -db -f "$WORK/haproxy-vps.cfg"
    HAPROXY_VPS_PID=$LAST_PID
    start_bg gw mptcpize run haproxy -db -f "$WORK/haproxy-gw.cfg"
    HAPROXY_GW_PID=$LAST_PID
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

# mptcp_check: MPTCP connections the server side holds now, by listening port (one per chain).
mptcp_check() {
    in_ns vps ss -MnH state established 2>/dev/null | awk '{split($4, a, ":"); print a[2]}' | sort | uniq -c | awk '{printf "%s port %s; ", $1, $2}'
}

# median_columns: the median of each numeric column of the lines on stdin.
median_columns() {
    awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; if (NF > nf) nf = NF }
         END { for (i = 1; i <= nf; i++) { n = 0; for (r = 1; r <= NR; r++) a[++n] = v[i, r] + 0
               for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
               printf "%s%s", (i > 1 ? " " : ""), a[int((n + 1) / 2)] } print "" }'
}

start_chain() {
    start_bg origin "$BIN/mptcp-bench" sink --listen 10.20.0.2:5201
    start_bg vps "$BIN/mptcp-bench" sink --listen 10.9.9.9:5202 --mptcp
    start_bg vps "$BIN/mptcp-proxy" server --listen 10.9.9.9:4443 --keys "$WORK/key" --allow 10.20.0.0/24 --log-level warning
    SERVER_PID=$LAST_PID
    start_bg gw "$BIN/mptcp-proxy" client --listen 10.10.0.1:8080 --to "${CHAIN_TARGET:-10.20.0.2:5201}" --server 10.9.9.9:4443 --key-file "$WORK/key" --log-level warning --no-path-manager
    CLIENT_PID=$LAST_PID
    for _ in $(seq 50); do
        in_ns lan bash -c 'exec 3<>/dev/tcp/10.10.0.1/8080' 2>/dev/null && return 0
        sleep 0.1
    done
    echo "proxy chain did not come up; log:" >&2; cat "$WORK/log" >&2; return 1
}

# load NS TARGET DIRECTION SECONDS [extra args] -> Mbit/s
load() {
    in_ns "$1" "$BIN/mptcp-bench" load --to "$2" --direction "$3" --seconds "$4" "${@:5}" | awk '{print $1}'
}

# cpu_seconds PID: user+system CPU time of a process so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
