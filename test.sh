#!/usr/bin/env bash
# Run Shoal's whole test suite. Installs the third-party test clients first
# (npm: amqp, amqplib, ws, hot-shots, express, playwright-core; pip: pika,
# statsd, websockets, h11, aio-pika, datadog) when they
# are missing, then runs every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
  echo "== installing Node test clients (npm ci)"
  (cd tests/node && npm ci --no-audit --no-fund --ignore-scripts)
fi
if ! python3 -c 'import pika, statsd, websockets, h11, aio_pika, datadog' 2>/dev/null; then
  echo "== installing Python test clients (pip)"
  python3 -m pip install -q -r tests/requirements.txt
fi

echo "== cargo test"
cargo test --workspace "$@"
