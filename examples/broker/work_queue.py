"""A durable work queue with publisher confirms and manual acks (pika), the
reliable pattern the chapter's message-queue section describes:
    shoal broker &
    python3 examples/broker/work_queue.py [HOST:PORT]     (default 127.0.0.1:5672)
"""
import sys

import pika

host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5672").rpartition(":")
conn = pika.BlockingConnection(pika.ConnectionParameters(host or "127.0.0.1", int(port)))
ch = conn.channel()
ch.queue_declare("tasks", durable=True)
ch.confirm_delivery()  # basic_publish returns once the broker has fsynced it
for i in range(5):
    ch.basic_publish("", "tasks", f"task {i}".encode(), pika.BasicProperties(delivery_mode=2))
print("5 tasks stored")

ch.basic_qos(prefetch_count=1)
done = 0
for method, props, body in ch.consume("tasks", inactivity_timeout=1):
    if method is None:
        break
    print("working on", body.decode())
    ch.basic_ack(method.delivery_tag)
    done += 1
    if done == 5:
        break
ch.cancel()
conn.close()
