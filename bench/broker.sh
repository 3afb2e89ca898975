#!/usr/bin/env bash
# Side-by-side benchmark: `shoal broker` vs RabbitMQ (Debian's package), both
# on loopback, driven by the same load generator (`shoal bench amqp`). Contenders alternate within each round; medians of
# RUNS rounds and ratios are printed. Bounded: about 7 minutes.
#
# Three parts (PARTS, comma-separated, default all):
#   throughput  saturation consume rate and p99 latency per scenario;
#   cpu         broker CPU time per message at a fixed offered load (RATE
#               msg/s, 1 publisher, 1 consumer, 16 B), from the broker
#               process's utime+stime in /proc/PID/stat (RabbitMQ: beam.smp)
#               before and after each run, divided by messages consumed;
#   rss         memory with 1,000,000 queued messages.
#
#   bench/broker.sh              # RUNS=3 SECONDS_PER_RUN=10 RATE=20000
#   RUNS=1 SECONDS_PER_RUN=5 bench/broker.sh
#   PARTS=cpu RUNS=5 bench/broker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-10}
RATE=${RATE:-20000}
PARTS=,${PARTS:-throughput,cpu,rss},
RMQ_PORT=${RMQ_PORT:-25680}
# Erlang distribution port: below the ephemeral range (32768-60999 here),
# where a client socket of anything else running may hold it
# (`dist_port_already_used ... not_erlang`).
RMQ_DIST_PORT=${RMQ_DIST_PORT:-25681}
SHOAL_PORT=${SHOAL_PORT:-25690}
WORK=$(mktemp -d /tmp/shoal-bench-broker.XXXXXX)
OUT="$WORK/results.txt"

if [ -z "${NO_BUILD:-}" ]; then   # NO_BUILD=1: use the release binary as it is
  echo "== building (release)" >&2
  cargo build --release -q -p shoal
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SHOAL=$TARGET/release/shoal
bench_amqp() { "$SHOAL" bench amqp "$@"; }

SHOAL_PID=""
rmq_ctl() { rabbitmqctl -n rabbit@localhost "$@"; }
cleanup() {
  [ -n "$SHOAL_PID" ] && kill "$SHOAL_PID" 2>/dev/null || true
  rmq_ctl stop >/dev/null 2>&1 || true
  epmd -kill >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK/rmq" "$WORK/shoal-data"
}
trap cleanup EXIT

echo "== starting RabbitMQ on 127.0.0.1:$RMQ_PORT (data in $WORK/rmq)" >&2
mkdir -p "$WORK/rmq"
export RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT=$RMQ_PORT RABBITMQ_DIST_PORT=$RMQ_DIST_PORT \
  ERL_EPMD_ADDRESS=127.0.0.1 \
  RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
  RABBITMQ_MNESIA_BASE="$WORK/rmq/mnesia" RABBITMQ_LOG_BASE="$WORK/rmq/log" \
  RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/rmq/enabled_plugins"
echo "[]." > "$WORK/rmq/enabled_plugins"
# Debian's rabbitmq-server drops to the rabbitmq user.
chmod 755 "$WORK"
id rabbitmq >/dev/null 2>&1 && chown -R rabbitmq: "$WORK/rmq"
nohup /usr/sbin/rabbitmq-server > "$WORK/rmq.log" 2>&1 &
for _ in $(seq 60); do rmq_ctl await_startup >/dev/null 2>&1 && break; sleep 1; done
rmq_ctl await_startup >/dev/null
RMQ_PID=$(rmq_ctl eval 'list_to_integer(os:getpid()).' | tr -dc '0-9')

echo "== starting shoal broker on 127.0.0.1:$SHOAL_PORT" >&2
SHOAL_RUNTIME_DIR="$WORK/run" "$SHOAL" -q broker --listen 127.0.0.1:$SHOAL_PORT \
  --data-dir "$WORK/shoal-data" --no-admin --name bench > "$WORK/shoal.log" 2>&1 &
SHOAL_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$SHOAL_PORT) 2>/dev/null && break; sleep 0.1; done

port_of() { if [ "$1" = rabbitmq ]; then echo $RMQ_PORT; else echo $SHOAL_PORT; fi; }
pid_of() { if [ "$1" = rabbitmq ]; then echo $RMQ_PID; else echo $SHOAL_PID; fi; }
rss_mb() { ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }
# utime+stime of a process in µs (fields 14 and 15 of /proc/PID/stat,
# counted after the ") " that ends the command name).
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_us() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="$TICK_US" '{print ($12 + $13) * t}'; }

declare -A SCEN=(
  [transient_1p1c]="-x 1 -y 1 -s 16 -a"
  [persistent_confirm_1p1c]="-x 1 -y 1 -s 16 -p -c 100 -P 100"
  [transient_4p4c_4q]="-x 4 -y 4 --queues 4 -s 16 -a"
)
ORDER=(transient_1p1c persistent_confirm_1p1c transient_4p4c_4q)

for s in "${ORDER[@]}"; do
  [[ $PARTS == *,throughput,* ]] || break
  for r in $(seq "$RUNS"); do
    if [ $((r % 2)) -eq 1 ]; then pair=(rabbitmq shoal); else pair=(shoal rabbitmq); fi
    for c in "${pair[@]}"; do
      j=$(bench_amqp -H 127.0.0.1:$(port_of $c) ${SCEN[$s]} -z "$SECS" --queue-prefix "bench-$s-$r" --json)
      rate=$(echo "$j" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["consume_rate"]))')
      p99=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["latency_us"]["p99"])')
      echo "$s $c $r $rate $p99" | tee -a "$OUT" >&2
    done
  done
done

declare -A CPU_SCEN=(
  [transient_1p1c]="-x 1 -y 1 -s 16 -a"
  [persistent_confirm_1p1c]="-x 1 -y 1 -s 16 -p -c 100 -P 100"
)
for s in transient_1p1c persistent_confirm_1p1c; do
  [[ $PARTS == *,cpu,* ]] || break
  echo "== CPU per message at $RATE msg/s: $s" >&2
  for r in $(seq "$RUNS"); do
    if [ $((r % 2)) -eq 1 ]; then pair=(rabbitmq shoal); else pair=(shoal rabbitmq); fi
    for c in "${pair[@]}"; do
      pid=$(pid_of $c)
      before=$(cpu_us "$pid")
      j=$(bench_amqp -H 127.0.0.1:$(port_of $c) ${CPU_SCEN[$s]} -r "$RATE" -z "$SECS" \
        --queue-prefix "cpu-$s-$r" --json)
      after=$(cpu_us "$pid")
      n=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["consumed"])')
      echo "cpu $s $c $r $n $((after - before))" | tee -a "$OUT" >&2
    done
  done
done

for c in rabbitmq shoal; do
  [[ $PARTS == *,rss,* ]] || break
  [ "$c" = rabbitmq ] && echo "== RSS with 1,000,000 queued 100-byte messages" >&2
  before=$(rss_mb "$(pid_of $c)")
  bench_amqp -H 127.0.0.1:$(port_of $c) -x 1 -y 0 -s 100 -C 1000000 -c 1000 -z 300 \
    --queue-prefix "bench-rss" --keep-queues --json > /dev/null
  sleep 2
  after=$(rss_mb "$(pid_of $c)")
  echo "rss $c $before $after" | tee -a "$OUT" >&2
done

touch "$OUT"
python3 - "$OUT" "$RUNS" "$SECS" "$RATE" <<'PY'
import sys, statistics, collections
rows = [l.split() for l in open(sys.argv[1])]
runs, secs, offered = sys.argv[2], sys.argv[3], sys.argv[4]
rate = collections.defaultdict(list); p99 = collections.defaultdict(list); rss = {}
cpu = collections.defaultdict(list); msgs = collections.defaultdict(list)
for r in rows:
    if r[0] == "rss":
        rss[r[1]] = (float(r[2]), float(r[3]))
    elif r[0] == "cpu":
        # cpu scenario contender round messages cpu_us
        if int(r[4]) > 0:
            cpu[(r[1], r[2])].append(int(r[5]) / int(r[4])); msgs[(r[1], r[2])].append(int(r[4]))
    else:
        rate[(r[0], r[1])].append(int(r[3])); p99[(r[0], r[1])].append(int(r[4]))
if rate:
    print(f"\n| scenario ({runs} alternating runs x {secs}s, consume rate) | RabbitMQ | shoal | shoal/RabbitMQ |")
    print("| --- | --- | --- | --- |")
for s in ["transient_1p1c", "persistent_confirm_1p1c", "transient_4p4c_4q"]:
    if not rate[(s, "rabbitmq")] or not rate[(s, "shoal")]:
        continue
    a = statistics.median(rate[(s, "rabbitmq")]); b = statistics.median(rate[(s, "shoal")])
    pa = statistics.median(p99[(s, "rabbitmq")]) / 1000; pb = statistics.median(p99[(s, "shoal")]) / 1000
    print(f"| {s} | {a:,.0f} msg/s (p99 {pa:.1f} ms) | {b:,.0f} msg/s (p99 {pb:.1f} ms) | {b / a:.2f} |")
if cpu:
    print(f"\n| broker CPU per message at {int(offered):,} msg/s offered ({runs} alternating runs x {secs}s, median) | RabbitMQ | shoal | RabbitMQ/shoal |")
    print("| --- | --- | --- | --- |")
for s in ["transient_1p1c", "persistent_confirm_1p1c"]:
    a, b = cpu[(s, "rabbitmq")], cpu[(s, "shoal")]
    if not a or not b:
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    na, nb = statistics.median(msgs[(s, "rabbitmq")]), statistics.median(msgs[(s, "shoal")])
    print(f"| {s} | {ma:.2f} µs/msg ({na:,.0f} msgs) | {mb:.2f} µs/msg ({nb:,.0f} msgs) | {ma / mb:.1f}x less |")
if "rabbitmq" in rss and "shoal" in rss:
    ra = rss["rabbitmq"]; sb = rss["shoal"]
    da, db = ra[1] - ra[0], sb[1] - sb[0]
    print(f"| RSS before → after 1,000,000 queued 100 B msgs | {ra[0]:.0f} → {ra[1]:.0f} MB | {sb[0]:.0f} → {sb[1]:.0f} MB | {db / da:.2f} of the growth |")
    print(f"| bytes per queued message (RSS growth / 1e6) | {da * 1048576 / 1e6:.0f} B | {db * 1048576 / 1e6:.0f} B | |")
PY
echo "raw results: $OUT" >&2
