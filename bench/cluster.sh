#!/usr/bin/env bash
# Side by side on loopback with wrk: the same small Node HTTP server
#   (a) as one process,
#   (b) under Node's own `cluster` module with 2 workers,
#   (c) under `shoal cluster -w 2` (one shared listening fd),
#   (d) under `shoal cluster -w 2 --reuse-port`,
#   (e) under PM2 cluster mode (`pm2 start bench_server.js -i 2`; PM2 is
#       installed from npm into a private prefix if `pm2` is not on PATH,
#       and runs with its PM2_HOME in the bench's temporary directory),
#   (f) under `shoal cluster -w 2` speaking Node's cluster protocol to the
#       same unmodified `listen(PORT)` app, in its three schedules: one
#       shared socket, a SO_REUSEPORT socket per worker, and Node's
#       round-robin (the primary accepts and hands over each connection).
# (a), (b), (e) and (f) run the app as it is, with no inherited fd.
# Reports req/s, p99 latency, each worker's share of the requests, and the
# primary's CPU (share of all CPU the contender used) and RSS (for PM2:
# its God daemon, which is its cluster primary). The
# contenders alternate for ROUNDS rounds; the table shows medians.
#
# Two scenarios: keep-alive (CONNS long connections) and `Connection: close`
# (a new connection per request, where fairness across workers shows).
#
# Usage: bench/cluster.sh   (ROUNDS=3 DURATION=10s CONNS=64 THREADS=2 WORKERS=2 SCENARIOS="keepalive close"
#                            CONTENDERS="single node-cluster shoal shoal-reuseport pm2 shoal-node shoal-node-reuseport shoal-node-rr")
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
PORT=${PORT:-18480}
SCENARIOS=${SCENARIOS:-keepalive close}
CONTENDERS=${CONTENDERS:-single node-cluster shoal shoal-reuseport pm2 shoal-node shoal-node-reuseport shoal-node-rr}
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }
cargo build --release -q -p shoal
SHOAL=$PWD/target/release/shoal
SERVER=$PWD/examples/cluster/bench_server.js
WORK=$(mktemp -d)
export SHOAL_RUNTIME_DIR=$WORK/rt
export PM2_HOME=$WORK/pm2
PRIMARY=""
PM2=""
if [[ " $CONTENDERS " == *" pm2 "* ]]; then
  PM2=$(command -v pm2 || true)
  if [ -z "$PM2" ]; then
    # A private prefix, kept between runs; nothing global is installed.
    prefix=${PM2_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal-bench/pm2}
    [ -x "$prefix/node_modules/.bin/pm2" ] || npm install --prefix "$prefix" --no-audit --no-fund -q pm2 >&2
    PM2=$prefix/node_modules/.bin/pm2
  fi
fi
pm2_stop() {
  [ -n "$PM2" ] && [ -d "$PM2_HOME" ] || return 0
  local god; god=$(cat "$PM2_HOME/pm2.pid" 2>/dev/null || true)
  "$PM2" kill >/dev/null 2>&1 || true
  if [ -n "$god" ]; then
    for _ in $(seq 1 100); do kill -0 "$god" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$god" 2>/dev/null || true
  fi
}
cleanup() { [ -n "$PRIMARY" ] && kill "$PRIMARY" 2>/dev/null; pm2_stop; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cpu_ticks() { # utime+stime of one pid, in clock ticks
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
children() { # direct children of a pid
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}
wait_http() {
  for _ in $(seq 1 200); do
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.05
  done
  echo "server on $PORT did not come up" >&2; return 1
}

start() { # $1 = contender; sets PRIMARY
  local counts=$WORK/counts-$1; rm -rf "$counts"; mkdir -p "$counts"
  case $1 in
    single) COUNT_DIR=$counts PORT=$PORT node "$SERVER" & PRIMARY=$! ;;
    node-cluster) COUNT_DIR=$counts PORT=$PORT NODE_CLUSTER_WORKERS=$WORKERS node "$SERVER" & PRIMARY=$! ;;
    shoal) COUNT_DIR=$counts "$SHOAL" -q cluster --name bench -w "$WORKERS" -l 127.0.0.1:$PORT --ready delay:200 -- node "$SERVER" & PRIMARY=$! ;;
    shoal-reuseport) COUNT_DIR=$counts "$SHOAL" -q cluster --name bench -w "$WORKERS" -l 127.0.0.1:$PORT --reuse-port --ready delay:200 -- node "$SERVER" & PRIMARY=$! ;;
    shoal-node*)
      local sched=shared
      case $1 in shoal-node-reuseport) sched=reuse-port ;; shoal-node-rr) sched=rr ;; esac
      COUNT_DIR=$counts PORT=$PORT "$SHOAL" -q cluster --name bench -w "$WORKERS" --schedule $sched --ready listening -- node "$SERVER" & PRIMARY=$! ;;
    pm2)
      COUNT_DIR=$counts PORT=$PORT "$PM2" start "$SERVER" -i "$WORKERS" --name bench >/dev/null
      PRIMARY=$(cat "$PM2_HOME/pm2.pid") ;;
  esac
  wait_http
  sleep 0.5
}

stop() {
  if [ "$1" = pm2 ]; then
    pm2_stop
    PRIMARY=""
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" || break; sleep 0.05; done
    return
  fi
  kill -TERM "$PRIMARY" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$PRIMARY" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$PRIMARY" 2>/dev/null || true
  wait "$PRIMARY" 2>/dev/null || true
  PRIMARY=""
  # Node's cluster workers may linger a moment after their primary.
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" || break; sleep 0.05; done
}

RESULTS=$WORK/results.tsv
: > "$RESULTS"
for scenario in $SCENARIOS; do
 hdr=(); [ "$scenario" = close ] && hdr=(-H "Connection: close")
 for round in $(seq 1 "$ROUNDS"); do
  for c in $CONTENDERS; do
    start "$c"
    kids=$(children "$PRIMARY")
    p0=$(cpu_ticks "$PRIMARY"); k0=0; for k in $kids; do k0=$((k0 + $(cpu_ticks "$k"))); done
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "http://127.0.0.1:$PORT/")
    p1=$(cpu_ticks "$PRIMARY"); k1=0; for k in $kids; do k1=$((k1 + $(cpu_ticks "$k"))); done
    rss=$(rss_kb "$PRIMARY")
    sleep 0.5 # let the workers write their final counts
    rps=$(echo "$out" | awk '/^Requests\/sec/ { print $2 }')
    p99=$(echo "$out" | awk '$1 == "99%" { print $2 }')
    shares=""; for f in "$WORK/counts-$c"/[0-9]*; do [ "${f%.tmp}" = "$f" ] && [ -f "$f" ] && shares="$shares$(cat "$f") "; done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$c" "$rps" "$p99" "$((p1 - p0))" "$((k1 - k0))" "$rss" "$shares" "$scenario" >> "$RESULTS"
    echo "$scenario round $round $c: $rps req/s, p99 $p99, counts: $shares, cpu ticks primary $((p1 - p0)) workers $((k1 - k0))" >&2
    stop "$c"
  done
 done
done

python3 - "$RESULTS" "$WORKERS" "$CONNS" <<'PY'
import sys, statistics
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
workers = int(sys.argv[2])
conns = sys.argv[3]
def ms(s):
    s = s.strip()
    for suf, f in (('us', 1e-3), ('ms', 1.0), ('s', 1e3)):
        if s.endswith(suf):
            return float(s[:-len(suf)]) * f
    return float('nan')
order = ['single', 'node-cluster', 'shoal', 'shoal-reuseport', 'pm2', 'shoal-node', 'shoal-node-reuseport', 'shoal-node-rr']
label = {'single': '(a) one Node process', 'node-cluster': '(b) Node cluster, %d workers' % workers,
         'shoal': '(c) shoal cluster -w %d, shared fd' % workers, 'shoal-reuseport': '(d) shoal cluster -w %d --reuse-port' % workers,
         'pm2': '(e) PM2 cluster mode, -i %d' % workers,
         'shoal-node': '(f) shoal cluster -w %d, Node protocol, shared' % workers,
         'shoal-node-reuseport': '(f) shoal cluster -w %d, Node protocol, reuse-port' % workers,
         'shoal-node-rr': '(f) shoal cluster -w %d, Node protocol, rr' % workers}
def table(rows, title):
  med = {}
  print('### ' + title)
  print()
  print('| contender | req/s (median) | p99 ms | per-worker share of requests | primary CPU, % of total | primary RSS MB |')
  print('| --- | ---: | ---: | --- | ---: | ---: |')
  for c in order:
      rs = [r for r in rows if r[1] == c]
      if not rs:
          continue
      rps = statistics.median(float(r[2]) for r in rs)
      p99 = statistics.median(ms(r[3]) for r in rs)
      shares = []
      for r in rs:
          counts = [int(x) for x in r[7].split()] if r[7].strip() else []
          tot = sum(counts)
          if tot and c != 'single':
              shares.append(sorted(round(100.0 * x / tot, 1) for x in counts))
      share = ' / '.join('%.1f%%' % statistics.median(s[i] for s in shares) for i in range(len(shares[0]))) if shares and all(len(s) == len(shares[0]) for s in shares) else '-'
      pc = [100.0 * int(r[4]) / max(1, int(r[4]) + int(r[5])) for r in rs]
      prim = '-' if c == 'single' else '%.2f%%' % statistics.median(pc)
      rss = statistics.median(int(r[6]) for r in rs) / 1024
      med[c] = rps
      print('| %s | %.0f | %.2f | %s | %s | %.1f |' % (label[c], rps, p99, share, prim, rss))
  for base, name in (('node-cluster', '(b)'), ('pm2', '(e)')):
      if base not in med:
          continue
      print()
      for c in ('shoal', 'shoal-reuseport', 'shoal-node', 'shoal-node-reuseport', 'shoal-node-rr'):
          if c in med:
              print('%s / %s: %.2f' % (label[c], name, med[c] / med[base]))

  print()
for sc in dict.fromkeys(r[8] for r in rows):
  titles = {'keepalive': 'keep-alive, %s connections' % conns,
            'close': 'Connection: close, a new connection per request, %s at a time' % conns}
  table([r for r in rows if r[8] == sc], titles.get(sc, sc))
PY
