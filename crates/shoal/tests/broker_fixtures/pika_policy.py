"""pika against queues a management-API policy applies to: publishes five
messages to each named queue (declared durable, with the given x-max-length
if any) and prints `count <queue> <ready messages>` for each.

usage: pika_policy.py AMQP_PORT QUEUE[:MAX_LENGTH]...
"""
import sys
import time

import pika

port = int(sys.argv[1])
creds = pika.PlainCredentials("admin", "admin-pw")
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, credentials=creds))
ch = conn.channel()
ch.confirm_delivery()
queues = []
for spec in sys.argv[2:]:
    name, _, limit = spec.partition(":")
    args = {"x-max-length": int(limit)} if limit else None
    ch.queue_declare(name, durable=True, arguments=args)
    queues.append(name)
    for i in range(5):
        ch.basic_publish("", name, str(i).encode())
time.sleep(0.2)
for name in queues:
    print(f"count {name} {ch.queue_declare(name, passive=True).method.message_count}")
conn.close()
