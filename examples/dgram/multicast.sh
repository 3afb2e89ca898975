#!/usr/bin/env bash
# The chapter's multicast example with shoal, on this machine only
# (IPv4 multicast joined and sent on 127.0.0.1, the default of `shoal dgram`).
# Client1 and Client2 listen to 230.1.2.3, Client3 to 230.3.2.1 and answers
# the first group; the sender multicasts "This is message #N" to both groups.
# Stops after 5 messages.
set -euo pipefail
SHOAL=${SHOAL:-shoal}
PORT=${PORT:-5554}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
$SHOAL dgram listen --bind 230.1.2.3:$PORT --group 230.1.2.3 --label Client1 & pids+=($!)
$SHOAL dgram listen --bind 230.1.2.3:$PORT --group 230.1.2.3 --label Client2 & pids+=($!)
$SHOAL dgram listen --bind 230.3.2.1:$PORT --group 230.3.2.1 --label Client3 \
  --reply-to 230.1.2.3:$PORT --reply 'Calling original group!' & pids+=($!)
sleep 0.5
$SHOAL dgram send 230.1.2.3:$PORT,230.3.2.1:$PORT --every 1s --count 5
sleep 0.5
