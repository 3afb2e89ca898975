"""Broker behaviours aio-pika's own test suite (and pika) meet, as RabbitMQ
3.x has them: errors with their reply codes and RabbitMQ's words, and the
semantics behind them. Each check prints `ok <check>` or `FAIL <check>: ...`
and the script goes on; it exits 1 if any check failed.

usage: aiopika_semantics.py AMQP_PORT
"""
import asyncio
import sys
import uuid

import aio_pika
import aiormq
import pika
from aio_pika import ExchangeType, Message
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)

PORT = sys.argv[1]
URL = f"amqp://guest:guest@127.0.0.1:{PORT}/"
failed = []


def name(prefix="q"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def check(what, cond, detail=""):
    if cond:
        print(f"ok {what}", flush=True)
    else:
        failed.append(what)
        print(f"FAIL {what}: {detail}", flush=True)


async def refusal(conn, action, kind, text):
    """Run `action(channel)` on a fresh channel; return None if it raised
    `kind` with reply text `text` (prefix and all), else what happened."""
    ch = await conn.channel()
    try:
        await action(ch)
    except kind as e:
        got = e.args[0] if e.args else ""
        return None if got == text else f"text {got!r}"
    except Exception as e:  # noqa: BLE001 - reported as a failure
        return f"raised {type(e).__name__}{e.args!r}"
    return "no error"


async def user_id(conn):
    # A user-id naming the connection's user passes; another is refused.
    ch = await conn.channel()
    q = await ch.declare_queue(exclusive=True)
    await ch.default_exchange.publish(Message(b"mine", user_id="guest"), q.name)
    got = await q.get(timeout=5)
    check("user-id-own", got.user_id == "guest" and got.body == b"mine", got.info())

    async def spoof(ch):
        await ch.default_exchange.publish(Message(b"x", user_id="someoneelse"), q.name)

    why = await refusal(
        conn, spoof, ChannelPreconditionFailed,
        "PRECONDITION_FAILED - user_id property set to 'someoneelse' but authenticated user was 'guest'",
    )
    check("user-id-spoofed", why is None, why)


async def queue_declares(conn):
    # Redeclaring a server-named queue by its name: amq. is reserved.
    ch = await conn.channel()
    q = await ch.declare_queue(exclusive=True)
    why = await refusal(
        conn, lambda ch: ch.declare_queue(q.name, exclusive=True), ChannelAccessRefused,
        f"ACCESS_REFUSED - queue name '{q.name}' contains reserved prefix 'amq.*'",
    )
    check("amq-gen-redeclare", why is None, why)

    # Another exclusive flag than the queue's is locked (405), not 406.
    n = name()
    ch = await conn.channel()
    await ch.declare_queue(n, auto_delete=True)
    locked = (f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{n}' in vhost '/'. "
              "It could be originally declared on another connection or the exclusive property "
              "value does not match that of the original declaration.")
    why = await refusal(conn, lambda ch: ch.declare_queue(n, exclusive=True, auto_delete=True),
                        ChannelLockedResource, locked)
    check("exclusive-flag-locked", why is None, why)

    # Bad arguments, in RabbitMQ's words.
    bad = [
        ({"x-max-priority": 256}, "{max_value_exceeded,256}"),
        ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
        ({"x-queue-mode": "foo"}, "\"unsupported queue mode 'foo'\""),
        ({"x-overflow": "foo"}, "invalid_overflow"),
        ({"x-max-length": "abc"}, "\"expected integer, got longstr\""),
        ({"x-expires": 0}, "{value_zero,0}"),
    ]
    for args, why_text in bad:
        n = name()
        key = next(iter(args))
        why = await refusal(
            conn, lambda ch: ch.declare_queue(n, exclusive=True, arguments=args),
            ChannelPreconditionFailed,
            f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{n}' in vhost '/': {why_text}",
        )
        check(f"bad-arg {key}", why is None, why)
    n = name()
    why = await refusal(
        conn, lambda ch: ch.declare_queue(n, exclusive=True, arguments={"x-delivery-limit": 3}),
        ChannelPreconditionFailed,
        f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{n}' in vhost '/' "
        "of queue type rabbit_classic_queue",
    )
    check("quorum-arg-on-classic", why is None, why)

    # queue.delete if-empty on a queue with a message.
    n = name()
    ch = await conn.channel()
    await ch.declare_queue(n, exclusive=True)
    await ch.default_exchange.publish(Message(b"x"), n)
    why = await refusal(conn, lambda ch: ch.queue_delete(n, if_empty=True), ChannelPreconditionFailed,
                        f"PRECONDITION_FAILED - queue '{n}' in vhost '/' not empty")
    check("delete-if-empty", why is None, why)


async def ttl_zero(conn):
    # x-message-ttl 0: delivered to a consumer waiting for it, else dropped.
    ch = await conn.channel()
    q = await ch.declare_queue(exclusive=True, arguments={"x-message-ttl": 0})
    await ch.default_exchange.publish(Message(b"nobody"), q.name)
    empty = await q.get(fail=False)
    got = asyncio.get_running_loop().create_future()
    await q.consume(lambda m: got.done() or got.set_result(m.body), no_ack=True)
    await ch.default_exchange.publish(Message(b"waited-for"), q.name)
    body = await asyncio.wait_for(got, 5)
    check("ttl-zero", empty is None and body == b"waited-for", (empty, body))


async def expiration_text(conn):
    ch = await conn.channel()
    q = await ch.declare_queue(exclusive=True)

    async def publish(ch):
        raw = await ch.get_underlay_channel()
        await raw.basic_publish(b"x", routing_key=q.name,
                                properties=aiormq.spec.Basic.Properties(expiration="abc"))
        await asyncio.wait_for(raw.closing, 5)

    why = await refusal(conn, publish, ChannelPreconditionFailed,
                        "PRECONDITION_FAILED - invalid expiration 'abc': no_integer")
    check("expiration-invalid", why is None, why)


async def exchanges(conn):
    raw = await (await conn.channel()).get_underlay_channel()
    try:
        await raw.exchange_declare("", exchange_type="direct", passive=True)
        why = "no error"
    except ChannelAccessRefused as e:
        want = "ACCESS_REFUSED - operation not permitted on the default exchange"
        why = None if e.args[0] == want else e.args[0]
    check("passive-default-exchange", why is None, why)

    why = await refusal(conn, lambda ch: ch.exchange_delete("amq.direct"), ChannelAccessRefused,
                        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")
    check("delete-system-exchange", why is None, why)

    x = name("x")
    ch = await conn.channel()
    await ch.declare_exchange(x, ExchangeType.DIRECT, auto_delete=True)
    why = await refusal(
        conn, lambda ch: ch.declare_exchange(x, ExchangeType.DIRECT, auto_delete=True, internal=True),
        ChannelPreconditionFailed,
        f"PRECONDITION_FAILED - inequivalent arg 'internal' for exchange '{x}' in vhost '/': "
        "received 'true' but current is 'false'",
    )
    check("exchange-internal-equivalence", why is None, why)
    why = await refusal(
        conn, lambda ch: ch.declare_exchange(x, ExchangeType.DIRECT, auto_delete=True,
                                             arguments={"alternate-exchange": "ae"}),
        ChannelPreconditionFailed,
        f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': "
        "received the value 'ae' of type 'longstr' but current is none",
    )
    check("exchange-args-equivalence", why is None, why)
    y = name("x")
    why = await refusal(
        conn, lambda ch: ch.declare_exchange(y, arguments={"alternate-exchange": 5}),
        ChannelPreconditionFailed,
        f"PRECONDITION_FAILED - invalid type 'byte' for arg 'alternate-exchange' in exchange '{y}' "
        "in vhost '/'",
    )
    check("alternate-exchange-type", why is None, why)


async def expires_lease(conn):
    # A passive declare renews an x-expires lease, as basic.get does.
    n = name()
    ch = await conn.channel()
    await ch.declare_queue(n, arguments={"x-expires": 1500})
    for _ in range(3):
        await asyncio.sleep(0.8)
        await (await conn.channel()).declare_queue(n, passive=True)
    check("expires-renewed-by-passive-declare", True)
    await asyncio.sleep(2.5)
    why = await refusal(conn, lambda ch: ch.declare_queue(n, passive=True), ChannelNotFoundEntity,
                        f"NOT_FOUND - no queue '{n}' in vhost '/'")
    check("expires-after-lease", why is None, why)


async def consumer_priority_text(conn):
    ch = await conn.channel()
    q = await ch.declare_queue(exclusive=True)
    why = await refusal(
        conn, lambda ch: _consume_with(ch, q.name),
        ChannelPreconditionFailed,
        f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q.name}' in vhost '/': "
        "\"expected integer, got longstr\"",
    )
    check("consumer-priority-type", why is None, why)


async def _consume_with(ch, queue):
    raw = await ch.get_underlay_channel()
    await raw.basic_consume(queue, lambda m: None, arguments={"x-priority": "high"})


def channel_max():
    # channel_max bounds how many channels are open, not their numbers.
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(PORT), channel_max=3))
    try:
        conn.channel(channel_number=7)
        conn.channel(channel_number=9)
        conn.channel(channel_number=2).close()
        conn.channel(channel_number=2)
    except Exception as e:  # noqa: BLE001 - reported as a failure
        check("channel-max-counts-open-channels", False, repr(e))
        return
    try:
        conn.channel(channel_number=3)
        why = "fourth channel opened"
    except pika.exceptions.ConnectionClosedByBroker as e:
        want = (530, "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)")
        why = None if (e.reply_code, e.reply_text) == want else (e.reply_code, e.reply_text)
    check("channel-max-counts-open-channels", why is None, why)


async def main():
    for part in (user_id, queue_declares, ttl_zero, expiration_text, exchanges,
                 consumer_priority_text, expires_lease):
        # Each part on its own connection; one that breaks is a failure and
        # the others still run.
        async with await aio_pika.connect(URL) as conn:
            if part is user_id:
                props = conn.transport.connection.server_properties
                check("server-copyright", "copyright" in props, sorted(props))
            try:
                await asyncio.wait_for(part(conn), 20)
            except Exception as e:  # noqa: BLE001 - reported as a failure
                check(part.__name__, False, repr(e))
    await asyncio.get_running_loop().run_in_executor(None, channel_max)


asyncio.run(asyncio.wait_for(main(), 100))
if failed:
    print(f"FAILED {failed}")
    sys.exit(1)
print("ALL OK")
