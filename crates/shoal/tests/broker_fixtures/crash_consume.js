// Crash test consumer (amqplib): drain crash.q with manual acks and print
// "m <id> <redelivered>" per message, then "end <count>".
const amqp = require('amqplib');
const PORT = process.argv[2];
(async () => {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${PORT}`);
  const ch = await conn.createChannel();
  const q = await ch.checkQueue('crash.q');
  let n = 0;
  const total = q.messageCount;
  if (total === 0) { console.log('end 0'); await conn.close(); return; }
  await ch.prefetch(500);
  await new Promise((resolve) => {
    ch.consume('crash.q', (m) => {
      process.stdout.write(`m ${m.content.toString()} ${m.fields.redelivered}\n`);
      ch.ack(m);
      if (++n === total) resolve();
    });
  });
  await ch.close();
  console.log(`end ${n}`);
  await conn.close();
})().catch((e) => { console.error(e); process.exit(3); });
