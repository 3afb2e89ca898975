#!/usr/bin/env bash
# CPU per request: run wrk against a proxy and print req/s and the CPU time
# (user + system, all threads and child processes) that the given processes
# spent per request, plus wrk's own. Used to find where a proxy's time goes
# on this 2-core machine, where every contender shares the CPUs with wrk and
# the backends: a proxy that needs less CPU per request leaves more to them.
#
# Usage: bench/cpu_per_request.sh PORT PID [PID...]
#   DUR=5 (seconds), CLOSE=1 (one request per connection),
#   BACKEND_PIDS="..." (also report the backends' CPU per request),
#   F='$14' or F='$15' (user or system time only).
# Example: bench/cpu_per_request.sh 19182 "$(pgrep -f 'shoal -q proxy')"
set -euo pipefail
port=$1; shift
tick=$(getconf CLK_TCK)
FLD=${F:-\$14+\$15}
sum() {
    local t=0 p q s
    for p in "$@"; do
        for q in $p $(pgrep -P "$p" || true); do
            s=$(awk '{print '"$FLD"'}' "/proc/$q/stat" 2>/dev/null || echo 0)
            t=$((t + s))
        done
    done
    echo "$t"
}
read -r -a backends <<<"${BACKEND_PIDS:-}"
b=$(sum "$@"); bb=$(sum "${backends[@]}")
out=$(/usr/bin/time -f "WRKCPU %U %S" wrk -t2 -c64 -d"${DUR:-5}s" ${CLOSE:+-H "Connection: close"} "http://127.0.0.1:$port/" 2>&1)
a=$(sum "$@"); ab=$(sum "${backends[@]}")
r=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
n=$(echo "$out" | awk '/requests in/ {print $1}')
w=$(echo "$out" | awk '/WRKCPU/ {print $2 + $3}')
awk -v w="$w" -v r="$r" -v n="$n" -v c=$((a - b)) -v cb=$((ab - bb)) -v t="$tick" -v nb="${#backends[@]}" 'BEGIN {
    printf "req/s %.0f  proxy %.2f us/req", r, c / t * 1e6 / n
    if (nb > 0) printf "  backends %.2f us/req", cb / t * 1e6 / n
    printf "  wrk %.2f us/req\n", w * 1e6 / n }'
