"""Memory alarm: with a tiny memory_high_watermark, publishing into a queue
nobody consumes makes the broker send connection.blocked; purging the queue
clears the alarm and the broker sends connection.unblocked.

Usage: python3 pika_blocked.py PORT
"""
import sys
import time

import pika

PORT = int(sys.argv[1])
events = []
params = pika.ConnectionParameters(host="127.0.0.1", port=PORT, blocked_connection_timeout=60)
c = pika.BlockingConnection(params)
c.add_on_connection_blocked_callback(lambda conn, frame: events.append("blocked"))
c.add_on_connection_unblocked_callback(lambda conn, frame: events.append("unblocked"))
ch = c.channel()
ch.queue_declare("alarm.q")
body = b"x" * 1000
deadline = time.time() + 30
while "blocked" not in events and time.time() < deadline:
    ch.basic_publish("", "alarm.q", body)
    c.process_data_events(time_limit=0)
assert "blocked" in events, "no connection.blocked"
print("ok blocked", flush=True)
# Free the memory with a second connection (the first one is blocked).
c2 = pika.BlockingConnection(params)
purged = c2.channel().queue_purge("alarm.q").method.message_count
assert purged > 0
c2.close()
deadline = time.time() + 30
while "unblocked" not in events and time.time() < deadline:
    c.process_data_events(time_limit=0.05)
assert "unblocked" in events, events
print("ok unblocked", flush=True)
# Publishing works again: the publishes that were held while blocked are
# routed first, then this one.
ch.basic_publish("", "alarm.q", b"after")
b = None
deadline = time.time() + 30
while b != b"after" and time.time() < deadline:
    m, _, b = ch.basic_get("alarm.q", auto_ack=True)
    if m is None:
        time.sleep(0.01)
assert b == b"after", b
ch.queue_delete("alarm.q")
c.close()
print("ok resumed", flush=True)
