#!/usr/bin/env bash
# bench/stats.sh: `shoal stats` against Etsy's statsd 0.9 (npm), same load,
# one run, rising rates until each loses more than 0.1% of the metrics.
#
# Load: `shoal bench statsd` (sendmmsg, SENDERS=4 sender sockets), counters only,
# 100 distinct names, 90 lines per datagram, DUR seconds per step. Both
# collectors flush every 1s to the same Graphite receiver
# (bench/stats_graphite_sum.py), which sums `stats_counts.bench.*`: that sum
# is what each collector received. Loss = 1 - received / sent.
# CPU = the collector's utime+stime over the step; RSS = its peak (VmHWM).
# shoal runs with a statsd_exporter mapping file (MAPPING, default
# bench/stats-mapping.yml: every bench series mapped, with labels) so the
# mapping's cost is in the figures.
#
# prometheus/statsd_exporter would run as a third column, but it cannot be
# had on this machine: Debian does not package it, and its Go module (and
# dependencies) cannot be fetched here (no Go module proxy). The script
# looks for a binary (STATSD_EXPORTER, or statsd_exporter on PATH) and
# otherwise prints a note and skips it.
#
# Usage: bench/stats.sh            (builds target/release/shoal if missing)
# Env:   DUR=5  STATSD_RATES="..."  SHOAL_RATES="..."  SHOAL_SOCKETS=2  SENDERS=4
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-$ROOT/target/release/shoal}
STATSD_JS=$ROOT/tests/node/node_modules/statsd/stats.js
DUR=${DUR:-5}
STATSD_RATES=${STATSD_RATES:-"100000 200000 300000 400000 500000 600000 800000 1000000 1500000"}
SHOAL_RATES=${SHOAL_RATES:-"1000000 2000000 4000000 6000000 8000000 10000000 12000000 14000000 16000000"}
SHOAL_SOCKETS=${SHOAL_SOCKETS:-2}
SENDERS=${SENDERS:-4}
MAPPING=${MAPPING:-$ROOT/bench/stats-mapping.yml}
STATSD_EXPORTER=${STATSD_EXPORTER:-$(command -v statsd_exporter || true)}
LOSS_LIMIT=0.001
TICK=$(getconf CLK_TCK)

[ -x "$SHOAL" ] || (cd "$ROOT" && cargo build --release -p shoal)
[ -f "$STATSD_JS" ] || { echo "statsd 0.9 missing: cd tests/node && npm ci --ignore-scripts" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

GPORT=$(free_port)
python3 "$ROOT/bench/stats_graphite_sum.py" "$GPORT" "stats_counts.bench." "$WORK/total" &
PIDS+=($!)
for _ in $(seq 100); do [ -f "$WORK/total" ] && break; sleep 0.05; done

received() { cat "$WORK/total"; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# Wait until the Graphite total stops moving (two quiet flush intervals).
settle() {
  local last now quiet=0 n=0
  last=$(received)
  while [ $quiet -lt 5 ] && [ $n -lt 40 ]; do
    sleep 0.5; n=$((n + 1))
    now=$(received)
    if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$now; fi
  done
}

# ladder NAME PID PORT RATES...: prints one row per rate, stops past the loss limit.
# Sets HELD_<NAME> to the best rate held without loss, and its CPU figures.
ladder() {
  local name=$1 pid=$2 port=$3; shift 3
  local held=0 held_cpu=- held_us=- rss
  for rate in "$@"; do
    settle
    local before c0 c1 report sent after got loss cpu us
    before=$(received)
    c0=$(cpu_ticks "$pid")
    report=$("$SHOAL" -q bench statsd --target "127.0.0.1:$port" --rate "$rate" --duration "${DUR}s" --names 100 --lines 90 --senders "$SENDERS")
    c1=$(cpu_ticks "$pid")
    settle
    after=$(received)
    sent=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["counter_metrics"])' "$report")
    got=$((after - before))
    loss=$(python3 -c "s,g=$sent,$got;print('%.5f'%((s-g)/s if s else 1))")
    cpu=$(python3 -c "print('%.0f'%(($c1-$c0)/$TICK/$DUR*100))")
    us=$(python3 -c "g=$got;print('%.2f'%((($c1-$c0)/$TICK)*1e6/g) if g else '-')")
    rss=$(rss_mb "$pid")
    printf '%-7s %9s %10s %10s %8s%% %5s%% %9s %7s\n' "$name" "$rate" "$sent" "$got" \
      "$(python3 -c "print('%.3f'%($loss*100))")" "$cpu" "$us" "$rss"
    if python3 -c "import sys;sys.exit(0 if $loss <= $LOSS_LIMIT else 1)"; then
      held=$(python3 -c "print(round($sent/$DUR))"); held_cpu=$cpu; held_us=$us
    else
      break
    fi
  done
  eval "HELD_$name=$held; CPU_$name=$held_cpu; US_$name=$held_us; RSS_$name=$(rss_mb "$pid")"
}

echo "# bench/stats.sh  $(date -u +%FT%TZ)  $(nproc) cores, ${DUR}s per step, load average $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-7s %9s %10s %10s %9s %6s %9s %7s\n' who target sent received loss cpu us/metric rss_mb

# (a) Etsy statsd 0.9
SPORT=$(free_port); MPORT=$(free_port)
cat > "$WORK/statsd.js" <<JS
{ port: $SPORT, address: "127.0.0.1", mgmt_address: "127.0.0.1", mgmt_port: $MPORT,
  flushInterval: 1000, backends: ["./backends/graphite"],
  graphiteHost: "127.0.0.1", graphitePort: $GPORT }
JS
(cd "$(dirname "$STATSD_JS")" && exec node stats.js "$WORK/statsd.js") > "$WORK/statsd.log" 2>&1 &
SPID=$!; PIDS+=($SPID)
for _ in $(seq 100); do grep -q "server is up" "$WORK/statsd.log" 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC2086
ladder statsd "$SPID" "$SPORT" $STATSD_RATES
kill "$SPID"; wait "$SPID" 2>/dev/null || true

# (b) shoal stats
HPORT=$(free_port)
SHOAL_RUNTIME_DIR=$WORK "$SHOAL" -q stats --udp "127.0.0.1:0" --http "127.0.0.1:$HPORT" --flush 1s \
  --graphite "127.0.0.1:$GPORT" --sockets "$SHOAL_SOCKETS" --mapping-config "$MAPPING" 2> "$WORK/shoal.log" &
HPID=$!; PIDS+=($HPID)
for _ in $(seq 100); do grep -q "ready" "$WORK/shoal.log" 2>/dev/null && break; sleep 0.1; done
UPORT=$(grep -o 'udp=[^ ]*' "$WORK/shoal.log" | head -1 | sed 's/.*://')
# shellcheck disable=SC2086
ladder shoal "$HPID" "$UPORT" $SHOAL_RATES
METRICS=$(curl -s "127.0.0.1:$HPORT/metrics")
DROPS=$(awk '/^shoal_stats_kernel_drops_total/ {print $2}' <<<"$METRICS")
MAPPED=$(grep -c '^bench_events_total{' <<<"$METRICS" || true)
kill "$HPID"; wait "$HPID" 2>/dev/null || true

# (c) statsd_exporter, when a binary is at hand.
if [ -z "$STATSD_EXPORTER" ]; then
  echo "statsd_exporter: skipped (not packaged in Debian; its Go module cannot be fetched here; set STATSD_EXPORTER=/path/to/binary)"
else
  echo "statsd_exporter: $STATSD_EXPORTER found, but its loss needs a /metrics sum this script does not read yet: skipped"
fi

echo
echo "mapping: $MAPPING, bench series mapped in /metrics: ${MAPPED:-0}"
echo "held without loss (<= 0.1%): statsd ${HELD_statsd} metrics/s (cpu ${CPU_statsd}%, ${US_statsd} us/metric, rss ${RSS_statsd} MB)"
echo "                             shoal  ${HELD_shoal} metrics/s (cpu ${CPU_shoal}%, ${US_shoal} us/metric, rss ${RSS_shoal} MB, kernel drops seen ${DROPS:-?})"
python3 -c "s,h=$HELD_statsd,$HELD_shoal;print('ratio shoal/statsd: %.1fx' % (h/s) if s else 'ratio: statsd held no rate')"
