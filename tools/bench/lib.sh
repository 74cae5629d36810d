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

start_chain() {
    start_bg origin "$BIN/mptcp-bench" sink --listen 10.20.0.2:5201
    start_bg vps "$BIN/mptcp-bench" sink --listen 10.9.9.9:5202 --mptcp
    start_bg vps "$BIN/mptcp-proxy" server --listen 10.9.9.9:4443 --keys "$WORK/key" --allow 10.20.0.0/24 --log-level warning
    SERVER_PID=$LAST_PID
    start_bg gw "$BIN/mptcp-proxy" client --listen 10.10.0.1:8080 --to 10.20.0.2:5201 --server 10.9.9.9:4443 --key-file "$WORK/key" --log-level warning --no-path-manager
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
