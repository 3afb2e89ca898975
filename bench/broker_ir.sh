#!/usr/bin/env bash
# Instructions per message of `shoal broker` under callgrind: repeatable on
# a noisy machine where CPU time is not. The broker runs under
# `valgrind --tool=callgrind --instr-atstart=no`; instrumentation is switched
# on for one paced run of `shoal bench amqp` (RATE msg/s, SECONDS_PER_RUN s,
# 1 publisher, 1 consumer, 16 B) and the total Ir is divided by the messages
# consumed. Prints `ir SCENARIO MESSAGES IR IR_PER_MSG` per scenario and
# keeps the callgrind output (for callgrind_annotate) in the work directory.
#
#   bench/broker_ir.sh                         # both scenarios, 5000 msg/s, 10 s
#   SCENARIOS=transient bench/broker_ir.sh
#   SHOAL=/tmp/shoal-base bench/broker_ir.sh    # another binary (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
SHOAL=${SHOAL:-$TARGET/release/shoal}
RATE=${RATE:-5000}
SECS=${SECONDS_PER_RUN:-10}
PORT=${PORT:-25790}
SCENARIOS=${SCENARIOS:-transient persistent}
WORK=$(mktemp -d /tmp/shoal-broker-ir.XXXXXX)

declare -A FLAGS=(
  [transient]="-x 1 -y 1 -s 16 -a"
  [persistent]="-x 1 -y 1 -s 16 -p -c 100 -P 100"
)
VG_PID=""
cleanup() { [ -n "$VG_PID" ] && kill "$VG_PID" 2>/dev/null || true; }
trap cleanup EXIT

for s in $SCENARIOS; do
  rm -rf "$WORK/data"
  SHOAL_RUNTIME_DIR="$WORK/run" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/callgrind.$s.%p" \
    "$SHOAL" -q broker --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    --no-admin --name ir > "$WORK/vg.$s.log" 2>&1 &
  VG_PID=$!
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
  callgrind_control -i on "$VG_PID" > /dev/null 2>&1
  # shellcheck disable=SC2086
  j=$("$SHOAL" bench amqp -H 127.0.0.1:$PORT ${FLAGS[$s]} -r "$RATE" -z "$SECS" \
    --queue-prefix "ir-$s" --json)
  callgrind_control -i off "$VG_PID" > /dev/null 2>&1
  kill -INT "$VG_PID"
  wait "$VG_PID" || true
  VG_PID=""
  n=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["consumed"])')
  ir=$(cat "$WORK"/callgrind.$s.* | awk '/^totals:/ {t += $2} END {print t}')
  echo "ir $s $n $ir $((ir / n))"
done
echo "callgrind output in $WORK" >&2
