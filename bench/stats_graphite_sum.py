#!/usr/bin/env python3
"""A tiny Graphite plaintext receiver for bench/stats.sh.

Listens on 127.0.0.1:PORT, sums the values of every line whose path starts
with PREFIX (statsd's per-flush counter counts, `stats_counts.bench.`), and
keeps the running total in FILE (rewritten atomically after each connection).
"""
import os
import socket
import sys
import threading

port, prefix, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
total = 0.0
lock = threading.Lock()


def publish():
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % round(total))
    os.replace(tmp, path)


def serve(conn):
    global total
    buf = b""
    with conn:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
    got = 0.0
    for line in buf.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(prefix):
            try:
                got += float(parts[1])
            except ValueError:
                pass
    with lock:
        total += got
        publish()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
publish()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
