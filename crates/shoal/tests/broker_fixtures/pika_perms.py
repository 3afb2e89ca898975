"""Users, vhosts and permissions from examples/broker.toml, checked with pika.

Usage: python3 pika_perms.py PORT
"""
import sys

import pika
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAccessDeniedError

PORT = int(sys.argv[1])


def connect(user, password, vhost):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=PORT, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1))


def refused_vhost(user, password, vhost):
    try:
        connect(user, password, vhost)
    except ConnectionClosedByBroker as e:
        assert e.reply_code == 530, e
        return
    except ProbableAccessDeniedError:
        return
    raise AssertionError("%s should not open vhost %s" % (user, vhost))


app = connect("app", "change-me", "staging")
ch = app.channel()
ch.queue_declare("app.jobs")
print("ok app-configures-app-prefix", flush=True)
try:
    app.channel().queue_declare("billing")
    raise AssertionError("declare outside app.* should be refused")
except ChannelClosedByBroker as e:
    assert e.reply_code == 403 and e.reply_text.startswith("ACCESS_REFUSED"), e
print("ok app-refused-outside-prefix", flush=True)
ch.basic_publish("", "app.jobs", b"hello staging")
m = None
for _ in range(300):
    m, _, body = ch.basic_get("app.jobs", auto_ack=True)
    if m:
        break
assert m and body == b"hello staging"
print("ok app-publishes-and-reads", flush=True)
app.close()

refused_vhost("app", "change-me", "/")
print("ok app-no-access-to-default-vhost", flush=True)
refused_vhost("guest", "guest", "staging")
print("ok guest-no-access-to-staging", flush=True)
g = connect("guest", "guest", "/")
g.channel().queue_declare("anything")
g.close()
print("ok guest-default-vhost", flush=True)
