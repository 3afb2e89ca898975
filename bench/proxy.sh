#!/usr/bin/env bash
# Side-by-side benchmark of `shoal proxy` against nginx and HAProxy.
#
# Two fast backends (nginx `return 200`) on loopback; wrk against
#   (a) one backend directly, (b) nginx proxy, (c) HAProxy, (d) shoal proxy,
# at 64 keep-alive connections, at one request per connection
# (`Connection: close`), and with keep-alive chunked uploads (`chunked`: a
# POST whose 4 KiB body comes in four 1 KiB chunks with an extension and a
# trailer field, which shoal validates and writes anew). Each scenario is run ROUNDS times, alternating the
# contenders (the order rotates every round); medians are reported with the ratios shoal/nginx and
# shoal/HAProxy. Then RSS with idle client connections open: silent ones and
# keep-alive ones after a request, 1 s after the last response and settled.
#
# Usage: bench/proxy.sh [DURATION_SECONDS] [ROUNDS]     (defaults: 8 3)
#   MODES="close" and WHO="nginx shoal" narrow a run (defaults: all three modes, all
#   four targets); IDLE_N=0 skips the idle-connection memory measurement.
#   WHO="nginx shoal hyper" adds crates/shoal-proxy/examples/hyper_forward.rs,
#   a thread-per-core hyper proxy, to compare shoal's own HTTP/1 engine with
#   hyper (build it first: cargo build --release --example hyper_forward -p shoal-proxy).
# Needs: nginx, haproxy, wrk, python3; a release build (cargo build --release -p shoal).
set -euo pipefail

DUR=${1:-8}
ROUNDS=${2:-3}
MODES=${MODES:-keepalive close chunked}
WHO=${WHO:-direct nginx haproxy shoal}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-$ROOT/target/release/shoal}
WORK=$(mktemp -d /tmp/shoal-bench-proxy.XXXXXX)
HYPER=${HYPER:-$ROOT/target/release/examples/hyper_forward}
B1=19101 B2=19102 NGX=19180 HAP=19181 SHO=19182 HYP=19183
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$SHOAL" ] || { echo "build first: cargo build --release -p shoal" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    exit 1
}

mkdir -p "$WORK/backend/logs" "$WORK/nginx/logs"
cat >"$WORK/backend/nginx.conf" <<EOF
daemon off;
worker_processes 1;
error_log $WORK/backend/logs/error.log warn;
pid $WORK/backend/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$B1 reuseport; location / { return 200 "ok"; } }
    server { listen 127.0.0.1:$B2 reuseport; location / { return 200 "ok"; } }
}
EOF
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
worker_rlimit_nofile 65536;
error_log $WORK/nginx/logs/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream lb_servers {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX deferred;
        location / {
            proxy_pass http://lb_servers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
EOF
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAP defer-accept
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$B1
    server s2 127.0.0.1:$B2
EOF
cat >"$WORK/shoal.toml" <<EOF
[[listeners]]
address = "127.0.0.1:$SHO"
[upstreams.lb_servers]
keepalive = 64
servers = [ { address = "127.0.0.1:$B1" }, { address = "127.0.0.1:$B2" } ]
[[routes]]
upstream = "lb_servers"
[limits]
max_connections = 30000
EOF

nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" 2>/dev/null & PIDS+=($!)
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>/dev/null & NGX_PID=$!; PIDS+=($NGX_PID)
haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 & HAP_PID=$!; PIDS+=($HAP_PID)
SHOAL_RUNTIME_DIR=$WORK "$SHOAL" -q proxy --no-control --config "$WORK/shoal.toml" & SHO_PID=$!; PIDS+=($SHO_PID)
PORTS=($B1 $B2 $NGX $HAP $SHO)
if [[ " $WHO " == *" hyper "* ]]; then
    [ -x "$HYPER" ] || { echo "build first: cargo build --release --example hyper_forward -p shoal-proxy" >&2; exit 1; }
    "$HYPER" "127.0.0.1:$HYP" "127.0.0.1:$B1" "127.0.0.1:$B2" >/dev/null 2>&1 & PIDS+=($!)
    PORTS+=($HYP)
fi
for p in "${PORTS[@]}"; do wait_port "$p"; done

# Resident memory (KiB) of a process and its children (nginx workers).
rss() {
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# wrk output -> "reqs p50_ms p99_ms"
run_wrk() {
    local port=$1; shift
    wrk -t2 -c64 -d"${DUR}s" --latency "$@" "http://127.0.0.1:$port/" 2>/dev/null | awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /^Requests\/sec/ { r=$2 }
        /^ +50%/ { p50=ms($2) }
        /^ +99%/ { p99=ms($2) }
        END { printf "%.0f %.3f %.3f\n", r, p50, p99 }'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A keep-alive chunked upload, written whole (wrk.format would add a
# Content-Length): four 1 KiB chunks, one with an extension, and a trailer.
cat >"$WORK/chunked.lua" <<'LUA'
local chunk = string.rep("x", 1024)
local body = "400;ext=1\r\n" .. chunk .. "\r\n"
for _ = 1, 3 do body = body .. "400\r\n" .. chunk .. "\r\n" end
body = body .. "0\r\nX-Checksum: 1\r\n\r\n"
local req = "POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n" .. body
request = function() return req end
LUA

declare -A R
for mode in $MODES; do
    extra=()
    [ "$mode" = close ] && extra=(-H "Connection: close")
    [ "$mode" = chunked ] && extra=(-s "$WORK/chunked.lua")
    for round in $(seq 1 "$ROUNDS"); do
        # Rotate the order every round so no contender always runs last.
        read -r -a order <<<"$WHO"
        rot=$(( (round - 1) % ${#order[@]} ))
        for who in "${order[@]:rot}" "${order[@]:0:rot}"; do
            case $who in direct) port=$B1;; nginx) port=$NGX;; haproxy) port=$HAP;; shoal) port=$SHO;; hyper) port=$HYP;; esac
            read -r r p50 p99 < <(run_wrk "$port" "${extra[@]}")
            R[$mode.$who.r]+="$r "; R[$mode.$who.p50]+="$p50 "; R[$mode.$who.p99]+="$p99 "
            echo "round $round $mode $who: $r req/s p50 ${p50}ms p99 ${p99}ms" >&2
        done
    done
done

med() { echo "${R[$1]:-}" | tr ' ' '\n' | awk 'NF' | median; }

echo
echo "## wrk -t2 -c64 -d${DUR}s, medians of $ROUNDS alternating rounds"
echo
echo "| mode | target | req/s | p50 ms | p99 ms |"
echo "| --- | --- | --- | --- | --- |"
for mode in $MODES; do
    for who in $WHO; do
        echo "| $mode | $who | $(med $mode.$who.r) | $(med $mode.$who.p50) | $(med $mode.$who.p99) |"
    done
done
echo
for mode in $MODES; do
    [[ " $WHO " == *" shoal "* && " $WHO " == *" nginx "* ]] || continue
    s=$(med $mode.shoal.r); n=$(med $mode.nginx.r); h=$(med $mode.haproxy.r)
    sp=$(med $mode.shoal.p99); np=$(med $mode.nginx.p99); hp=$(med $mode.haproxy.p99)
    awk -v m="$mode" -v s="$s" -v n="$n" -v h="$h" -v sp="$sp" -v np="$np" -v hp="$hp" 'BEGIN {
        printf "%s: shoal/nginx req/s %.2f; p99 shoal %.2f ms vs nginx %.2f ms", m, s/n, sp, np
        if (h > 0) printf "; shoal/HAProxy req/s %.2f, HAProxy p99 %.2f ms", s/h, hp
        printf "\n" }'
    y=$(med $mode.hyper.r); yp=$(med $mode.hyper.p99)
    if [ -n "$y" ]; then
        awk -v m="$mode" -v s="$s" -v y="$y" -v sp="$sp" -v yp="$yp" 'BEGIN {
            printf "%s: shoal/hyper req/s %.2f; p99 shoal %.2f ms vs hyper %.2f ms\n", m, s/y, sp, yp }'
    fi
done

[ "${IDLE_N:-5000}" = 0 ] && exit 0
echo
# The open-file limit here is 20,000: hold IDLE_N idle connections and scale the growth to 10,000.
# Two kinds of idle client: one that connected and never spoke (every proxy
# here defers accepting it), and a keep-alive client that made one request
# and now waits (the usual idle connection of a browser or a pool).
IDLE_N=${IDLE_N:-5000}
echo "## RSS after the runs, and growth per 10,000 idle client connections (measured with $IDLE_N)"
IDLE=$WORK/idle.py
cat >"$IDLE" <<'EOF'
import socket, sys
port, n, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    s = socket.socket(); s.connect(("127.0.0.1", port)); socks.append(s)
    if kind == "keepalive":
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
if kind == "keepalive":
    for s in socks:
        got = b""
        while b"\r\n\r\n" not in got or not got.endswith(b"ok"):
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("connection closed before the response")
            got += chunk
print("open", flush=True)
sys.stdin.readline()
EOF
echo
# RSS is read 1 s after the last client got its response, and again once it
# has settled (unchanged for 2 s, at most 10 s): a proxy may give back what
# the burst of requests took a little later (shoal's workers return freed
# memory to the system a few times a second and park long-idle connections).
echo "| proxy | idle kind | RSS before (MiB) | RSS with $IDLE_N idle conns, 1 s / settled (MiB) | growth per 10k idle conns, 1 s / settled (MiB) |"
echo "| --- | --- | --- | --- | --- |"
for kind in silent keepalive; do
    for who in nginx haproxy shoal; do
        [[ " $WHO " == *" $who "* ]] || continue
        case $who in nginx) pid=$NGX_PID port=$NGX;; haproxy) pid=$HAP_PID port=$HAP;; shoal) pid=$SHO_PID port=$SHO;; esac
        before=$(rss "$pid")
        coproc IDLER { python3 "$IDLE" "$port" "$IDLE_N" "$kind"; }
        read -r _ <&"${IDLER[0]}"
        sleep 1
        with=$(rss "$pid")
        settled=$with same=0
        for _ in $(seq 18); do
            sleep 0.5
            now=$(rss "$pid")
            if [ "$now" = "$settled" ]; then same=$((same + 1)); else same=0; settled=$now; fi
            [ "$same" -ge 4 ] && break
        done
        echo >&"${IDLER[1]}"
        wait "$IDLER_PID" 2>/dev/null || true
        sleep 1
        awk -v w="$who" -v k="$kind" -v b="$before" -v a="$with" -v s="$settled" -v n="$IDLE_N" 'BEGIN { printf "| %s | %s | %.1f | %.1f / %.1f | %.1f / %.1f |\n", w, k, b/1024, a/1024, s/1024, (a-b)/1024*10000/n, (s-b)/1024*10000/n }'
    done
done
