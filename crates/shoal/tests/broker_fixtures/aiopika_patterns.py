"""aio-pika (PyPI) patterns against shoal broker: the RPC pattern
(aio_pika.patterns.RPC: concurrent calls, a remote exception, an expired
call dead-lettered back through its headers exchange as a timeout, a named
RPC exchange, close) and QueueIterator (in order, timeout when idle,
reject with requeue comes back redelivered, leaving the iterator cancels
its consumer). Prints `ok <check>` per check.

usage: aiopika_patterns.py AMQP_PORT
"""
import asyncio
import sys

import aio_pika
from aio_pika.patterns import RPC

PORT = sys.argv[1]
URL = f"amqp://guest:guest@127.0.0.1:{PORT}/"


def expect(cond, what, detail=""):
    if not cond:
        print(f"FAIL {what}: {detail}")
        sys.exit(1)


async def rpc_checks(conn):
    ch = await conn.channel()
    rpc = await RPC.create(ch)

    async def multiply(*, x, y):
        return x * y

    async def boom():
        raise ValueError("nope")

    await rpc.register("multiply", multiply, auto_delete=True)
    await rpc.register("boom", boom, auto_delete=True)
    results = await asyncio.gather(*(rpc.proxy.multiply(x=i, y=3) for i in range(50)))
    expect(results == [i * 3 for i in range(50)], "rpc-call", results)
    print("ok rpc-call")
    try:
        await rpc.call("boom")
        expect(False, "rpc-error", "no exception")
    except ValueError as e:
        expect(str(e) == "nope", "rpc-error", e)
    print("ok rpc-error")

    # A call to a method nobody serves, with an expiration: the call queue
    # dead-letters it to the RPC's headers exchange, which routes it back
    # to the caller's result queue by its From header: a timeout.
    caller_ch = await conn.channel()
    caller = await RPC.create(caller_ch)
    await caller_ch.declare_queue("nobody_serves", auto_delete=True,
                                  arguments={"x-dead-letter-exchange": RPC.DLX_NAME})
    try:
        await asyncio.wait_for(caller.call("nobody_serves", expiration=0.2), 10)
        expect(False, "rpc-expired", "no timeout")
    except asyncio.TimeoutError:
        pass
    print("ok rpc-expired")
    await caller.close()
    await rpc.close()
    print("ok rpc-close")

    # The same over a named RPC exchange, on a fresh channel.
    ch3 = await conn.channel()
    rpc3 = await RPC.create(ch3, exchange="rpc-named")
    await rpc3.register("add", lambda *, a, b: a + b, auto_delete=True)
    expect(await rpc3.proxy.add(a=2, b=40) == 42, "rpc-named-exchange")
    await rpc3.close()
    print("ok rpc-named-exchange")


async def iterator_checks(conn):
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=5)
    # Not auto-delete: as on RabbitMQ, leaving an iterator cancels its
    # consumer, which would delete an auto-delete queue.
    q = await ch.declare_queue("iter-q")
    for i in range(20):
        await ch.default_exchange.publish(aio_pika.Message(body=str(i).encode()), routing_key="iter-q")
    got = []
    async with q.iterator() as it:
        async for msg in it:
            async with msg.process():
                got.append(int(msg.body))
            if len(got) == 20:
                break
    expect(got == list(range(20)), "queue-iterator", got)
    print("ok queue-iterator")

    # Idle iterator with a timeout raises TimeoutError.
    try:
        async with q.iterator(timeout=0.5) as it:
            async for _ in it:
                expect(False, "iterator-timeout", "got a message")
    except asyncio.TimeoutError:
        pass
    print("ok iterator-timeout")

    # Reject with requeue: with one message in flight at a time, it comes
    # back redelivered ahead of the one published after it.
    await ch.set_qos(prefetch_count=1)
    await ch.default_exchange.publish(aio_pika.Message(body=b"again"), routing_key="iter-q")
    await ch.default_exchange.publish(aio_pika.Message(body=b"later"), routing_key="iter-q")
    seen = []
    async with q.iterator() as it:
        async for msg in it:
            if not seen:
                await msg.reject(requeue=True)
            else:
                await msg.ack()
            seen.append((msg.body, msg.redelivered))
            if len(seen) == 3:
                break
    expect(seen[0] == (b"again", False) and seen[1] == (b"again", True) and seen[2] == (b"later", False),
           "iterator-requeue", seen)
    print("ok iterator-requeue")

    # Leaving the iterator cancelled its consumer: the queue has none.
    res = await ch.declare_queue("iter-q", passive=True)
    expect(res.declaration_result.consumer_count == 0, "iterator-cancels",
           res.declaration_result)
    print("ok iterator-cancels")
    await q.delete()


async def main():
    conn = await aio_pika.connect_robust(URL)
    async with conn:
        await rpc_checks(conn)
        await iterator_checks(conn)
    print("ALL OK")


asyncio.run(asyncio.wait_for(main(), 90))
