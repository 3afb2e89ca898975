// Large persistent messages (amqplib): `PORT publish N SIZE` publishes N
// messages of SIZE bytes to the durable queue big.q on a confirm channel and
// prints "done" once all are confirmed; `PORT consume` drains big.q with
// acks and prints "got <count> <bytes> <intact>", intact when every body is
// its index repeated.
const amqp = require('amqplib');
const [PORT, mode, N, SIZE] = process.argv.slice(2);
const body = (i, size) => Buffer.alloc(size, String(i % 10));
(async () => {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${PORT}`);
  if (mode === 'publish') {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue('big.q', { durable: true });
    for (let i = 0; i < +N; i++) {
      ch.sendToQueue('big.q', body(i, +SIZE), { persistent: true, messageId: String(i) });
      if (i % 16 === 15) await ch.waitForConfirms();
    }
    await ch.waitForConfirms();
    console.log('done');
  } else {
    const ch = await conn.createChannel();
    const q = await ch.checkQueue('big.q');
    let n = 0, bytes = 0, intact = true;
    if (q.messageCount > 0) {
      await ch.prefetch(4);
      await new Promise((resolve) => {
        ch.consume('big.q', (m) => {
          const i = +m.properties.messageId;
          if (!m.content.equals(body(i, m.content.length))) intact = false;
          bytes += m.content.length;
          ch.ack(m);
          if (++n === q.messageCount) resolve();
        });
      });
    }
    console.log(`got ${n} ${bytes} ${intact}`);
  }
  await conn.close();
})().catch((e) => { console.error(e); process.exit(3); });
