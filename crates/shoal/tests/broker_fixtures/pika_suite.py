"""Feature suite for shoal broker driven by pika (RabbitMQ's Python client).

Usage: python3 pika_suite.py PORT
Prints "ok <check>" per passing check; exits non-zero on the first failure.
"""
import sys
import time

import pika
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, ProbableAuthenticationError, UnroutableError, NackError

PORT = int(sys.argv[1])
PARAMS = pika.ConnectionParameters(
    host="127.0.0.1", port=PORT, credentials=pika.PlainCredentials("guest", "guest"),
    heartbeat=30, blocked_connection_timeout=30,
)
DEADLINE = 20.0


def conn():
    return pika.BlockingConnection(PARAMS)


def ok(name):
    print("ok", name, flush=True)


def get_body(ch, q, tries=200):
    """basic.get, retrying briefly while the message is in flight."""
    for _ in range(tries):
        m, props, body = ch.basic_get(q, auto_ack=True)
        if m is not None:
            return m, props, body
        time.sleep(0.01)
    raise AssertionError("no message on %s" % q)


def expect_channel_error(c, code, fn):
    ch = c.channel()
    try:
        fn(ch)
    except ChannelClosedByBroker as e:
        assert e.reply_code == code, (e.reply_code, e.reply_text)
        return e.reply_text
    raise AssertionError("expected channel error %d" % code)


def drain(c, ch, q, n, auto_ack=True):
    got = []
    def on_msg(chn, m, props, body):
        got.append((m, props, body))
    tag = ch.basic_consume(q, on_msg, auto_ack=auto_ack)
    end = time.time() + DEADLINE
    while len(got) < n and time.time() < end:
        c.process_data_events(time_limit=0.05)
    ch.basic_cancel(tag)
    return got


c = conn()
ch = c.channel()

# --- default exchange, declare, get, server-named queue
q = ch.queue_declare("", exclusive=True).method.queue
assert q.startswith("amq.gen-"), q
ch.basic_publish("", q, b"hi", pika.BasicProperties(content_type="text/plain", headers={"k": "v"}))
m, props, body = get_body(ch, q)
assert body == b"hi" and props.content_type == "text/plain" and props.headers == {"k": "v"}, (body, props)
assert m.exchange == "" and m.routing_key == q
ok("default-exchange-get")
m, _, _ = ch.basic_get(q)
assert m is None
ok("get-empty")

# --- direct / fanout / topic / headers
ch.exchange_declare("t.direct", "direct")
ch.exchange_declare("t.fanout", "fanout")
ch.exchange_declare("t.topic", "topic")
ch.exchange_declare("t.headers", "headers")
qs = {}
for n in ["d1", "f1", "f2", "t1", "t2", "h_all", "h_any"]:
    qs[n] = ch.queue_declare("suite." + n, exclusive=True).method.queue
ch.queue_bind(qs["d1"], "t.direct", "red")
ch.queue_bind(qs["f1"], "t.fanout")
ch.queue_bind(qs["f2"], "t.fanout", "whatever")
ch.queue_bind(qs["t1"], "t.topic", "a.*.c")
ch.queue_bind(qs["t2"], "t.topic", "a.#")
ch.queue_bind(qs["h_all"], "t.headers", arguments={"x-match": "all", "x": 1, "y": "z"})
ch.queue_bind(qs["h_any"], "t.headers", arguments={"x-match": "any", "x": 1, "y": "z"})
ch.basic_publish("t.direct", "red", b"r")
ch.basic_publish("t.direct", "blue", b"b")
ch.basic_publish("t.fanout", "", b"f")
ch.basic_publish("t.topic", "a.b.c", b"abc")
ch.basic_publish("t.topic", "a", b"a")
ch.basic_publish("t.topic", "a.b.c.d", b"abcd")
ch.basic_publish("t.headers", "", b"both", pika.BasicProperties(headers={"x": 1, "y": "z"}))
ch.basic_publish("t.headers", "", b"one", pika.BasicProperties(headers={"x": 1}))
time.sleep(0.05)
def bodies(qn):
    out = []
    while True:
        m, _, body = ch.basic_get(qn, auto_ack=True)
        if m is None:
            return out
        out.append(body)
def wait_count(qn, n):
    end = time.time() + DEADLINE
    while time.time() < end:
        if ch.queue_declare(qn, passive=True).method.message_count >= n:
            return
        time.sleep(0.01)
wait_count(qs["h_any"], 2)
assert bodies(qs["d1"]) == [b"r"]
assert bodies(qs["f1"]) == [b"f"] and bodies(qs["f2"]) == [b"f"]
assert bodies(qs["t1"]) == [b"abc"]
assert bodies(qs["t2"]) == [b"abc", b"a", b"abcd"]
assert bodies(qs["h_all"]) == [b"both"]
assert bodies(qs["h_any"]) == [b"both", b"one"]
ok("exchange-types")

# --- headers: x-match is checked at bind (RabbitMQ's 406 and words); the
# -with-x forms match x- keys too, which all/any leave out
def bad_x_match(x):
    x.queue_bind(x.queue_declare("", exclusive=True).method.queue, "t.headers", arguments={"x-match": "nope"})
t = expect_channel_error(c, 406, bad_x_match)
assert 'Invalid x-match field value <<"nope">>; expected all, any, all-with-x, or any-with-x' in t, t
hx = {m: ch.queue_declare("", exclusive=True).method.queue for m in ["any", "any-with-x"]}
for m, hq in hx.items():
    ch.queue_bind(hq, "t.headers", arguments={"x-match": m, "x-tenant": "t1"})
ch.basic_publish("t.headers", "", b"tenant", pika.BasicProperties(headers={"x-tenant": "t1"}))
ch.basic_publish("t.headers", "", b"other", pika.BasicProperties(headers={"x-tenant": "t2"}))
wait_count(hx["any-with-x"], 1)
time.sleep(0.05)
assert bodies(hx["any-with-x"]) == [b"tenant"]
assert bodies(hx["any"]) == [], "x-match any matched on an x- key"
ok("headers-x-match")

# --- a topic binding with many '#' against a long key is matched at once
# (a backtracking matcher tries every split and never answers again)
tq = ch.queue_declare("", exclusive=True).method.queue
ch.queue_bind(tq, "amq.topic", ".".join(["#", "a"] * 10) + ".#.b")
ch.basic_publish("amq.topic", ".".join(["a"] * 120), b"no")
ch.basic_publish("amq.topic", ".".join(["a"] * 120) + ".b", b"yes")
wait_count(tq, 1)
assert bodies(tq) == [b"yes"]
ok("topic-many-hashes")

# --- predeclared exchanges
for x in ["amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"]:
    ch.exchange_declare(x, passive=True)
ok("predeclared-exchanges")

# --- exchange-to-exchange binding and alternate exchange
ch.exchange_declare("t.src", "topic")
ch.exchange_declare("t.dst", "fanout")
ch.exchange_bind("t.dst", "t.src", "logs.#")
qd = ch.queue_declare("suite.e2e", exclusive=True).method.queue
ch.queue_bind(qd, "t.dst")
ch.basic_publish("t.src", "logs.error", b"e2e")
ch.basic_publish("t.src", "other", b"nope")
wait_count(qd, 1)
assert bodies(qd) == [b"e2e"]
ok("exchange-to-exchange")
ch.exchange_declare("t.ae", "fanout")
ch.exchange_declare("t.main", "direct", arguments={"alternate-exchange": "t.ae"})
qae = ch.queue_declare("suite.ae", exclusive=True).method.queue
ch.queue_bind(qae, "t.ae")
ch.basic_publish("t.main", "unrouted", b"to-ae")
wait_count(qae, 1)
assert bodies(qae) == [b"to-ae"]
ok("alternate-exchange")

# --- mandatory + basic.return, confirms
cc = c.channel()
cc.confirm_delivery()
try:
    cc.basic_publish("t.direct", "nobody", b"x", mandatory=True)
    raise AssertionError("expected UnroutableError")
except UnroutableError as e:
    assert e.messages[0].body == b"x"
ok("mandatory-return")
cc.basic_publish("t.direct", "red", b"confirmed")
ok("publisher-confirm")

# --- a slow trickle of single persistent publishes, each waiting for its
# confirm (the store's group commit must never hold one back), with the
# consumer's acks of the previous message in between (acknowledgements
# alone do not wake the store's syncer: a record must still do so).
import os
import threading
cc.queue_declare("suite.trickle", durable=True)
cget = c.channel()
for i in range(20):
    watchdog = threading.Timer(10.0, lambda i=i: (print("confirm", i, "never came", flush=True), os._exit(1)))
    watchdog.start()
    t0 = time.monotonic()
    cc.basic_publish("", "suite.trickle", b"t%d" % i, pika.BasicProperties(delivery_mode=2))
    watchdog.cancel()
    assert time.monotonic() - t0 < 10.0, ("confirm", i, "took", time.monotonic() - t0)
    m, _, body = cget.basic_get("suite.trickle", auto_ack=False)
    assert body == b"t%d" % i, (i, body)
    cget.basic_ack(m.delivery_tag)
    time.sleep(0.01 * (i % 4))
cc.queue_delete("suite.trickle")
ok("persistent-confirm-trickle")

# --- reject-publish overflow -> nack in confirm mode
cc.queue_declare("suite.rp", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
cc.basic_publish("", "suite.rp", b"1")
try:
    cc.basic_publish("", "suite.rp", b"2")
    raise AssertionError("expected NackError")
except NackError:
    pass
ok("reject-publish-nack")

# --- max-length drop-head
ch.queue_declare("suite.dh", exclusive=True, arguments={"x-max-length": 2})
for i in range(5):
    ch.basic_publish("", "suite.dh", str(i).encode())
wait_count("suite.dh", 2)
assert bodies("suite.dh") == [b"3", b"4"]
ok("max-length-drop-head")
ch.queue_declare("suite.dhb", exclusive=True, arguments={"x-max-length-bytes": 10})
for i in range(4):
    ch.basic_publish("", "suite.dhb", b"12345")
time.sleep(0.05)
assert bodies("suite.dhb") == [b"12345", b"12345"]
ok("max-length-bytes")

# --- TTL + dead-lettering with x-death
ch.exchange_declare("t.dlx", "direct")
ch.queue_declare("suite.dead", exclusive=True)
ch.queue_bind("suite.dead", "t.dlx", "dead")
ch.queue_declare("suite.ttl", exclusive=True, arguments={
    "x-message-ttl": 50, "x-dead-letter-exchange": "t.dlx", "x-dead-letter-routing-key": "dead"})
ch.basic_publish("", "suite.ttl", b"expire-me")
m, props, body = get_body(ch, "suite.dead", tries=500)
assert body == b"expire-me"
death = props.headers["x-death"][0]
assert death["reason"] == "expired" and death["queue"] == "suite.ttl" and death["count"] == 1, death
ok("ttl-dead-letter-x-death")
ch.queue_declare("suite.pmttl", exclusive=True, arguments={"x-dead-letter-exchange": "t.dlx", "x-dead-letter-routing-key": "dead"})
ch.basic_publish("", "suite.pmttl", b"per-msg", pika.BasicProperties(expiration="30"))
m, props, body = get_body(ch, "suite.dead", tries=500)
assert body == b"per-msg" and props.headers["x-death"][0]["original-expiration"] == "30", props.headers
ok("per-message-expiration")

# --- reject / nack / requeue / redelivered, reject to DLX
ch.queue_declare("suite.rej", exclusive=True, arguments={"x-dead-letter-exchange": "t.dlx", "x-dead-letter-routing-key": "dead"})
ch.basic_publish("", "suite.rej", b"r1")
wait_count("suite.rej", 1)
m, _, _ = ch.basic_get("suite.rej")
assert not m.redelivered
ch.basic_nack(m.delivery_tag, requeue=True)
m, _, body = ch.basic_get("suite.rej")
assert m.redelivered and body == b"r1"
ok("nack-requeue-redelivered")
ch.basic_reject(m.delivery_tag, requeue=False)
m, props, body = get_body(ch, "suite.dead")
assert body == b"r1" and props.headers["x-death"][0]["reason"] == "rejected"
ok("reject-dead-letter")

# --- ack multiple, unknown delivery tag -> 406
ch.queue_declare("suite.ackm", exclusive=True)
for i in range(3):
    ch.basic_publish("", "suite.ackm", b"m")
wait_count("suite.ackm", 3)
tags = [ch.basic_get("suite.ackm")[0].delivery_tag for _ in range(3)]
ch.basic_ack(tags[-1], multiple=True)
assert ch.queue_declare("suite.ackm", passive=True).method.message_count == 0
ok("ack-multiple")
def bad_ack(x):
    x.basic_ack(999)
    x.queue_declare("", exclusive=True)
txt = expect_channel_error(c, 406, bad_ack)
assert "PRECONDITION_FAILED" in txt and "unknown delivery tag" in txt, txt
ok("unknown-delivery-tag-406")
# With multiple, the tag itself must be outstanding too (RabbitMQ's
# collect_acks): an ack past the last delivery settles nothing and closes
# the channel, and the deliveries it held go back to the queue.
def bad_ack_settles_nothing(q, bad_ack, what):
    """Two messages in queue q; bad_ack(channel) gets them and acks wrongly:
    406 unknown delivery tag, and both go back to the queue."""
    ch.queue_declare(q)
    for i in range(2):
        ch.basic_publish("", q, b"m")
    wait_count(q, 2)
    txt = expect_channel_error(c, 406, bad_ack)
    assert "unknown delivery tag" in txt, txt
    wait_count(q, 2)
    assert ch.queue_declare(q, passive=True).method.message_count == 2, what
    ch.queue_delete(q)
def bad_multi_ack(x):
    held = [x.basic_get("suite.ackm2")[0].delivery_tag for _ in range(2)]
    x.basic_ack(held[-1] + 5, multiple=True)
    x.queue_declare("", exclusive=True)
bad_ack_settles_nothing("suite.ackm2", bad_multi_ack, "an unknown multiple ack settled deliveries")
ok("unknown-delivery-tag-multiple-406")

# --- qos prefetch: with prefetch 2 only 2 unacked deliveries
ch.queue_declare("suite.qos", exclusive=True)
for i in range(5):
    ch.basic_publish("", "suite.qos", str(i).encode())
wait_count("suite.qos", 5)
qc = c.channel()
qc.basic_qos(prefetch_count=2)
got = []
qc.basic_consume("suite.qos", lambda chn, m, p, b: got.append(m), auto_ack=False)
end = time.time() + 0.5
while time.time() < end:
    c.process_data_events(time_limit=0.05)
assert len(got) == 2, len(got)
qc.basic_ack(got[-1].delivery_tag, multiple=True)
end = time.time() + DEADLINE
while len(got) < 4 and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert len(got) == 4, len(got)
ok("qos-prefetch")
qc.close()


def comes_back(queue, body, hand_back):
    """Take `body` unacked from `queue` on a second channel, let
    `hand_back(channel)` return it, and see it come again, redelivered, on the
    main channel. Returns the second channel."""
    ch.queue_declare(queue, exclusive=True)
    ch.basic_publish("", queue, body)
    wait_count(queue, 1)
    other = c.channel()
    other.basic_get(queue)
    hand_back(other)
    m, _, got = get_body(ch, queue)
    assert m.redelivered and got == body
    return other


# --- basic.recover requeues unacked with redelivered
rc = comes_back("suite.rec", b"again", lambda rc: rc.basic_recover(requeue=True))
ok("recover")
rc.close()
# requeue=false (redeliver to the same consumer) is not implemented on
# RabbitMQ either: 540 closes the connection, rather than a silent requeue
rq = conn()
try:
    rq.channel().basic_recover(requeue=False)
    raise AssertionError("recover requeue=false was accepted")
except ConnectionClosedByBroker as e:
    assert e.reply_code == 540 and e.reply_text == "NOT_IMPLEMENTED - requeue=false", e
ok("recover-no-requeue-540")

# --- channel close requeues unacked
comes_back("suite.cc", b"held", lambda c2: c2.close())
ok("close-requeues")

# --- priorities
ch.queue_declare("suite.prio", exclusive=True, arguments={"x-max-priority": 10})
for p in [1, 5, 9, 0]:
    ch.basic_publish("", "suite.prio", str(p).encode(), pika.BasicProperties(priority=p))
wait_count("suite.prio", 4)
assert bodies("suite.prio") == [b"9", b"5", b"1", b"0"]
ok("priority")

# --- tx commit / rollback
tc = c.channel()
tc.tx_select()
tc.queue_declare("suite.tx", exclusive=True)
tc.basic_publish("", "suite.tx", b"rolled")
tc.tx_rollback()
tc.basic_publish("", "suite.tx", b"committed")
assert tc.queue_declare("suite.tx", passive=True).method.message_count == 0
tc.tx_commit()
wait_count("suite.tx", 1)
assert bodies("suite.tx") == [b"committed"]
ok("tx")
# A commit whose acknowledgements include a tag no longer outstanding (acked
# twice) fails as a whole: 406, nothing settled, the deliveries go back.
def double_ack_in_tx(x):
    x.tx_select()
    first = x.basic_get("suite.txack")[0].delivery_tag
    x.basic_get("suite.txack")
    x.basic_ack(first)
    x.basic_ack(first)
    x.tx_commit()
bad_ack_settles_nothing("suite.txack", double_ack_in_tx, "a failed commit settled part of its acks")
ok("tx-commit-all-or-nothing")

# A transactional publish is checked and routed when it is published, as
# RabbitMQ does: one it refuses closes the channel then, and nothing of the
# transaction is applied; the commit delivers to the queues routed to, even
# if the exchange has gone since.
ch.exchange_declare("t.txint", "direct", internal=True)
def refused_in_tx(publish, code, what):
    q = "suite.txrefused"
    ch.queue_declare(q)
    def fn(x):
        x.tx_select()
        x.basic_publish("", q, b"before")
        publish(x)
        x.queue_declare(q, passive=True)
        x.tx_commit()
    expect_channel_error(c, code, fn)
    n = ch.queue_declare(q, passive=True).method.message_count
    assert n == 0, "%s: the transaction's first publish was delivered" % what
    ch.queue_delete(q)
refused_in_tx(lambda x: x.basic_publish("t.txmissing", "k", b"x"), 404, "missing exchange")
refused_in_tx(lambda x: x.basic_publish("t.txint", "k", b"x"), 403, "internal exchange")
refused_in_tx(lambda x: x.basic_publish("", "suite.txrefused", b"x", pika.BasicProperties(expiration="-5")), 406, "bad expiration")
ch.exchange_delete("t.txint")
ok("tx-publish-refused-at-publish")
ch.queue_declare("suite.txroute")
ch.exchange_declare("t.txgone", "direct")
ch.queue_bind("suite.txroute", "t.txgone", "k")
txc = c.channel()
txc.tx_select()
txc.basic_publish("t.txgone", "k", b"routed")
txc.queue_declare("suite.txroute", passive=True)
ch.exchange_delete("t.txgone")
txc.tx_commit()
wait_count("suite.txroute", 1)
ch.queue_delete("suite.txroute")
ok("tx-publish-routed-at-publish")

# --- purge, delete if-empty / if-unused
ch.queue_declare("suite.del", exclusive=True)
ch.basic_publish("", "suite.del", b"x")
wait_count("suite.del", 1)
txt = expect_channel_error(c, 406, lambda x: x.queue_delete("suite.del", if_empty=True))
ok("delete-if-empty-406")
assert ch.queue_purge("suite.del").method.message_count == 1
ch.queue_delete("suite.del", if_empty=True)
ok("purge-and-delete")
ch.queue_declare("suite.inuse", exclusive=True)
ch.basic_consume("suite.inuse", lambda *a: None, auto_ack=True)
expect_channel_error(c, 406, lambda x: x.queue_delete("suite.inuse", if_unused=True))
ok("delete-if-unused-406")

# --- error codes
t = expect_channel_error(c, 404, lambda x: x.queue_declare("suite.missing", passive=True))
assert t.startswith("NOT_FOUND"), t
ok("passive-queue-404")
expect_channel_error(c, 404, lambda x: x.exchange_declare("t.missing", passive=True))
ok("passive-exchange-404")
def pub_missing(x):
    x.basic_publish("t.missing", "k", b"x")
    x.queue_declare("", exclusive=True)
expect_channel_error(c, 404, pub_missing)
ok("publish-missing-exchange-404")
expect_channel_error(c, 406, lambda x: x.exchange_declare("t.direct", "fanout"))
ok("inequivalent-exchange-406")
expect_channel_error(c, 406, lambda x: x.queue_declare("suite.dh", exclusive=True, arguments={"x-max-length": 3}))
ok("inequivalent-queue-args-406")
expect_channel_error(c, 403, lambda x: x.exchange_declare("amq.custom", "direct"))
ok("reserved-amq-403")
other = conn()
e = None
try:
    other.channel().queue_declare(q, passive=True)
except ChannelClosedByBroker as ex:
    e = ex
assert e is not None and e.reply_code == 405, e
ok("exclusive-queue-405")
oc = other.channel()
oc.queue_declare("suite.excl-consume")
oc.basic_consume("suite.excl-consume", lambda *a: None, exclusive=True)
expect_channel_error(c, 403, lambda x: x.basic_consume("suite.excl-consume", lambda *a: None))
ok("exclusive-consumer-403")
oc.queue_delete("suite.excl-consume")
other.close()
try:
    ch2 = c.channel()
    ch2.queue_declare("", exclusive=True)
    ch2.basic_consume("nonexistent-q", lambda *a: None)
except ChannelClosedByBroker as ex:
    assert ex.reply_code == 404
ok("consume-missing-404")

# --- consumer cancel notification when the queue is deleted
cancelled = []
ch3 = c.channel()
ch3.queue_declare("suite.cn")
ch3.add_on_cancel_callback(lambda frame: cancelled.append(frame))
ch3.basic_consume("suite.cn", lambda *a: None, auto_ack=True)
ch.queue_delete("suite.cn")
end = time.time() + DEADLINE
while not cancelled and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert cancelled, "no basic.cancel"
ok("consumer-cancel-notify")

# --- single active consumer
ch.queue_declare("suite.sac", exclusive=True, arguments={"x-single-active-consumer": True})
a, b2 = [], []
s1 = c.channel(); s1.basic_consume("suite.sac", lambda chn, m, p, body: a.append(body), auto_ack=True)
s2 = c.channel(); s2.basic_consume("suite.sac", lambda chn, m, p, body: b2.append(body), auto_ack=True)
for i in range(4):
    ch.basic_publish("", "suite.sac", b"x")
end = time.time() + DEADLINE
while len(a) + len(b2) < 4 and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert len(a) == 4 and len(b2) == 0, (len(a), len(b2))
ok("single-active-consumer")

# --- x-expires deletes an unused queue (polled less often than its lease:
# a passive declare renews the lease, as on RabbitMQ)
ch.queue_declare("suite.exp", arguments={"x-expires": 100})
end = time.time() + DEADLINE
gone = False
while time.time() < end and not gone:
    time.sleep(0.3)
    try:
        c.channel().queue_declare("suite.exp", passive=True)
    except ChannelClosedByBroker as ex:
        assert ex.reply_code == 404
        gone = True
assert gone
ok("x-expires")

# --- auto-delete queue goes with its last consumer
ad = c.channel()
ad.queue_declare("suite.ad", auto_delete=True)
tag = ad.basic_consume("suite.ad", lambda *a: None, auto_ack=True)
ad.basic_cancel(tag)
expect_channel_error(c, 404, lambda x: x.queue_declare("suite.ad", passive=True))
ok("auto-delete-queue")

# --- large message split over frames
big = bytes(range(256)) * 2000  # 512000 bytes > frame_max
ch.queue_declare("suite.big", exclusive=True)
ch.basic_publish("", "suite.big", big)
m, _, body = get_body(ch, "suite.big")
assert body == big
ok("large-message")

# --- requeue puts messages back at their original positions (RabbitMQ order)
ch.queue_declare("suite.order", exclusive=True)
for i in range(1, 5):
    ch.basic_publish("", "suite.order", b"m%d" % i)
wait_count("suite.order", 4)
held = [ch.basic_get("suite.order")[0] for _ in range(4)]
ch.basic_publish("", "suite.order", b"m5")
for m in held:
    ch.basic_nack(m.delivery_tag, requeue=True)
wait_count("suite.order", 5)
assert bodies("suite.order") == [b"m1", b"m2", b"m3", b"m4", b"m5"], "one by one"
for i in range(1, 5):
    ch.basic_publish("", "suite.order", b"m%d" % i)
wait_count("suite.order", 4)
held = [ch.basic_get("suite.order")[0] for _ in range(4)]
ch.basic_reject(held[2].delivery_tag, requeue=True)
ch.basic_nack(held[1].delivery_tag, multiple=True, requeue=True)
ch.basic_reject(held[3].delivery_tag, requeue=True)
wait_count("suite.order", 4)
assert bodies("suite.order") == [b"m1", b"m2", b"m3", b"m4"], "out of order and multiple"
oc = c.channel()
for i in range(1, 5):
    ch.basic_publish("", "suite.order", b"m%d" % i)
wait_count("suite.order", 4)
got = []
oc.basic_consume("suite.order", lambda chn, m, p, b: got.append(b), auto_ack=False)
end = time.time() + DEADLINE
while len(got) < 4 and time.time() < end:
    c.process_data_events(time_limit=0.05)
ch.basic_publish("", "suite.order", b"m5")
oc.close()
wait_count("suite.order", 5)
assert bodies("suite.order") == [b"m1", b"m2", b"m3", b"m4", b"m5"], "channel close"
ok("requeue-keeps-original-order")

# --- unbinding what is not there answers unbind-ok (RabbitMQ; aio-pika relies on it)
uc = c.channel()
uc.queue_declare("suite.unb", exclusive=True)
uc.exchange_declare("t.unb", "direct")
uc.queue_unbind("suite.unb", "t.unb", "never-bound")
uc.queue_unbind("suite.unb-missing", "t.unb", "k")
uc.queue_unbind("suite.unb", "t.unb-missing", "k")
uc.exchange_unbind("t.unb", "t.unb-missing", "k")
uc.exchange_unbind("t.unb-missing", "t.unb", "k")
uc.exchange_unbind("t.unb", "t.direct", "never-bound")
uc.queue_bind("suite.unb", "t.unb", "k")
uc.queue_unbind("suite.unb", "t.unb", "k")
uc.basic_publish("t.unb", "k", b"x")
assert uc.queue_declare("suite.unb", passive=True).method.message_count == 0
assert uc.is_open
uc.close()
ok("unbind-missing-ok")

# --- redeclare equivalence on every argument, including one left out
full = {"x-max-length": 10, "x-message-ttl": 60000, "x-dead-letter-exchange": "t.dlx",
        "x-max-priority": 5, "x-expires": 600000}
ch.queue_declare("suite.eqv", arguments=full)
for arg in full:
    less = {k: v for k, v in full.items() if k != arg}
    t = expect_channel_error(c, 406, lambda x: x.queue_declare("suite.eqv", arguments=less))
    assert t.startswith("PRECONDITION_FAILED - inequivalent arg '%s' for queue 'suite.eqv' in vhost '/': received none but current is the value '" % arg), t
t = expect_channel_error(c, 406, lambda x: x.queue_declare("suite.eqv", arguments=dict(full, **{"x-max-length": 20})))
assert t == "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'suite.eqv' in vhost '/': received '20' but current is '10'", t
t = expect_channel_error(c, 406, lambda x: x.queue_declare("suite.eqv"))
assert "received none but current is the value '" in t, t
t = expect_channel_error(c, 406, lambda x: x.queue_declare("suite.eqv", arguments={k: v for k, v in full.items() if k != "x-max-length"}))
assert t == "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'suite.eqv' in vhost '/': received none but current is the value '10' of type 'signedint'", t
ch.queue_declare("suite.eqv", arguments=dict(full, **{"x-custom": "ignored"}))
ch.queue_declare("suite.eqv", passive=True)
ch.queue_delete("suite.eqv")
ok("redeclare-equivalence-406")

# --- topic edges as RabbitMQ: the empty key has no words, empty words count
ch.exchange_declare("t.edges", "topic")
edge_keys = {"hash": "#", "star": "*", "starstar": "*.*", "aemptyb": "a.*.b", "hashstar": "#.*"}
for n, k in edge_keys.items():
    ch.queue_declare("suite.edge." + n, exclusive=True)
    ch.queue_bind("suite.edge." + n, "t.edges", k)
for rk in ["", "a..b", "."]:
    ch.basic_publish("t.edges", rk, rk.encode() or b"<empty>")
ch.queue_declare("suite.edge.sync", exclusive=True)
ch.basic_publish("", "suite.edge.sync", b"sync")
wait_count("suite.edge.sync", 1)
wait_count("suite.edge.hash", 3)
got = {n: bodies("suite.edge." + n) for n in edge_keys}
assert got == {"hash": [b"<empty>", b"a..b", b"."], "star": [], "starstar": [b"."],
               "aemptyb": [b"a..b"], "hashstar": [b"a..b", b"."]}, got
ok("topic-edges")

# --- x-queue-type: classic accepted, quorum and stream refused (406 naming the argument)
ch.queue_declare("suite.classic", exclusive=True, arguments={"x-queue-type": "classic"})
ch.queue_declare("suite.classic", exclusive=True)
ch.basic_publish("", "suite.classic", b"c")
assert get_body(ch, "suite.classic")[2] == b"c"
for qt in ["quorum", "stream"]:
    t = expect_channel_error(c, 406, lambda x: x.queue_declare("suite." + qt, durable=True, arguments={"x-queue-type": qt}))
    assert t == "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'suite.%s' in vhost '/': \"unsupported queue type '%s'\"" % (qt, qt), t
    expect_channel_error(c, 404, lambda x: x.queue_declare("suite." + qt, passive=True))
ok("queue-type-classic-only")

# --- consumer priorities: the high-priority consumer gets everything while it has credit
caps = c._impl.server_capabilities
assert caps.get("consumer_priorities") is True, caps
ch.queue_declare("suite.cprio", exclusive=True)
lo_ch, hi_ch = c.channel(), c.channel()
lo_ch.basic_qos(prefetch_count=10)
hi_ch.basic_qos(prefetch_count=5)
lo, hi = [], []
lo_ch.basic_consume("suite.cprio", lambda chn, m, p, b: lo.append(m), arguments={"x-priority": 1, "x-cancel-on-ha-failover": True})
hi_ch.basic_consume("suite.cprio", lambda chn, m, p, b: hi.append(m), arguments={"x-priority": 10})
for i in range(5):
    ch.basic_publish("", "suite.cprio", b"p%d" % i)
end = time.time() + DEADLINE
while len(hi) + len(lo) < 5 and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert (len(hi), len(lo)) == (5, 0), (len(hi), len(lo))
for i in range(3):
    ch.basic_publish("", "suite.cprio", b"q%d" % i)
end = time.time() + DEADLINE
while len(hi) + len(lo) < 8 and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert (len(hi), len(lo)) == (5, 3), (len(hi), len(lo))
hi_ch.basic_ack(hi[-1].delivery_tag, multiple=True)
for i in range(4):
    ch.basic_publish("", "suite.cprio", b"r%d" % i)
end = time.time() + DEADLINE
while len(hi) + len(lo) < 12 and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert (len(hi), len(lo)) == (9, 3), (len(hi), len(lo))
t = expect_channel_error(c, 406, lambda x: x.basic_consume("suite.cprio", lambda *a: None, arguments={"x-priority": "high"}))
assert "x-priority" in t, t
lo_ch.close()
hi_ch.close()
ok("consumer-priorities")

# --- properties and header tables reach consumers exactly as sent (order, types, nesting)
import decimal
ch.queue_declare("suite.props", exclusive=True)
sent_headers = {"zeta": 1, "alpha": "x", "mid": {"b": 1, "a": [3, "z", {"y": 1, "c": 2}]},
                "big": 2 ** 40, "flag": True, "dec": decimal.Decimal("1.5"), "bin": b"\x00\xff"}
sent = pika.BasicProperties(content_type="application/json", headers=sent_headers,
                            correlation_id="cid", reply_to="rq", priority=3, timestamp=1700000000)
ch.basic_publish("", "suite.props", b"p", sent)
got = drain(c, ch, "suite.props", 1)
ch.basic_publish("", "suite.props", b"p", sent)
m, props, _ = get_body(ch, "suite.props")
for p in [got[0][1], props]:
    h = p.headers
    assert list(h) == ["zeta", "alpha", "mid", "big", "flag", "dec", "bin"], list(h)
    assert list(h["mid"]) == ["b", "a"] and list(h["mid"]["a"][2]) == ["y", "c"], h["mid"]
    assert h == sent_headers, h
    assert (p.content_type, p.correlation_id, p.reply_to, p.priority, p.timestamp) == ("application/json", "cid", "rq", 3, 1700000000)
ok("properties-as-sent")

# --- direct reply-to: round trip, rewritten reply_to, misuse errors
assert c._impl.server_capabilities.get("direct_reply_to") is True
ch.queue_declare("suite.rpc", auto_delete=True)
rc = c.channel()
replies = []
rc.basic_consume("amq.rabbitmq.reply-to", lambda chn, m, p, b: replies.append((p, b)), auto_ack=True)
rc.basic_publish("", "suite.rpc", b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
server = conn()
sch = server.channel()
m, req, body = get_body(sch, "suite.rpc")
assert body == b"ping" and req.reply_to.startswith("amq.rabbitmq.reply-to.") and len(req.reply_to) > len("amq.rabbitmq.reply-to."), req.reply_to
sch.basic_publish("", req.reply_to, b"pong", pika.BasicProperties(correlation_id=req.correlation_id))
end = time.time() + DEADLINE
while not replies and time.time() < end:
    c.process_data_events(time_limit=0.05)
assert [(p.correlation_id, b) for p, b in replies] == [("c1", b"pong")], replies
t = expect_channel_error(c, 406, lambda x: x.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False))
assert t == "PRECONDITION_FAILED - reply consumer cannot acknowledge", t
def no_reply_consumer(x):
    x.basic_publish("", "suite.rpc", b"q", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    x.queue_declare("", exclusive=True)
t = expect_channel_error(c, 406, no_reply_consumer)
assert t == "PRECONDITION_FAILED - fast reply consumer does not exist", t
rc.close()
# The reply consumer is gone: a late reply is unroutable, nothing breaks.
sch.confirm_delivery()
try:
    sch.basic_publish("", req.reply_to, b"late", mandatory=True)
    raise AssertionError("late reply should be returned")
except UnroutableError:
    pass
server.close()
ch.queue_delete("suite.rpc")
ok("direct-reply-to")

c.close()

# --- bad login: ACCESS_REFUSED 403
try:
    pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=PORT,
        credentials=pika.PlainCredentials("guest", "wrong"), connection_attempts=1))
    raise AssertionError("login should fail")
except (ProbableAuthenticationError, pika.exceptions.AuthenticationError) as e:
    pass
ok("bad-login-refused")

# --- unknown vhost: 530 NOT_ALLOWED
try:
    pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=PORT, virtual_host="nope",
        credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1))
    raise AssertionError("vhost should be refused")
except ConnectionClosedByBroker as e:
    assert e.reply_code == 530, e
except pika.exceptions.ProbableAccessDeniedError:
    pass
ok("unknown-vhost-530")
print("ALL OK", flush=True)
