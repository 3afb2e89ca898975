// Log in with amqplib as USER:PASS and open a channel: prints "ok", or
// "refused <reason>" when the broker turns the login down.
const amqp = require('amqplib');
const [PORT, USER, PASS] = process.argv.slice(2);
(async () => {
  const conn = await amqp.connect(`amqp://${USER}:${PASS}@127.0.0.1:${PORT}`);
  await conn.createChannel();
  console.log('ok');
  await conn.close();
})().catch((e) => { console.log(`refused ${e.message}`); });
