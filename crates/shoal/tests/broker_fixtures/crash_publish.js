// Crash test publisher (amqplib): publish persistent messages 0..N-1 to the
// durable queue crash.q on a confirm channel, window of 200 unconfirmed, and
// print "c <id>" for each message the broker confirmed.
const amqp = require('amqplib');
const PORT = process.argv[2];
const N = parseInt(process.argv[3], 10);
(async () => {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${PORT}`);
  conn.on('error', () => process.exit(3));
  const ch = await conn.createConfirmChannel();
  ch.on('error', () => process.exit(3));
  await ch.assertQueue('crash.q', { durable: true });
  let inflight = 0, next = 0;
  await new Promise((resolve) => {
    const pump = () => {
      while (inflight < 200 && next < N) {
        const id = next++;
        inflight++;
        ch.sendToQueue('crash.q', Buffer.from(String(id)), { persistent: true }, (err) => {
          inflight--;
          if (!err) process.stdout.write(`c ${id}\n`);
          if (next >= N && inflight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  console.log('done');
  await conn.close();
})().catch((e) => { console.error(e); process.exit(3); });
