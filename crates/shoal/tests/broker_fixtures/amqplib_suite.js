// Feature suite for shoal broker driven by amqplib (node). Prints
// "ok <check>" per passing check; exits non-zero on the first failure.
const amqp = require('amqplib');
const assert = require('assert');
const PORT = process.argv[2];
const URL = `amqp://guest:guest@127.0.0.1:${PORT}`;
const ok = (n) => console.log('ok ' + n);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function getOne(ch, q, opts = { noAck: true }) {
  for (let i = 0; i < 500; i++) {
    const m = await ch.get(q, opts);
    if (m) return m;
    await sleep(10);
  }
  throw new Error('no message on ' + q);
}

async function expectChannelError(conn, code, fn) {
  const ch = await conn.createChannel();
  const closed = new Promise((resolve) => ch.on('error', (e) => resolve(e)));
  try { await fn(ch); } catch (e) { /* the rejected RPC */ }
  const e = await closed;
  assert.strictEqual(e.code, code, String(e.message));
  return e.message;
}

(async () => {
  const conn = await amqp.connect(URL);
  const ch = await conn.createChannel();

  // topic routing + consume/ack
  await ch.assertExchange('al.topic', 'topic', { durable: false });
  const { queue: q1 } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(q1, 'al.topic', 'a.*');
  ch.publish('al.topic', 'a.b', Buffer.from('ab'));
  ch.publish('al.topic', 'a.b.c', Buffer.from('abc'));
  ch.publish('al.topic', 'a.z', Buffer.from('az'));
  const got = [];
  await new Promise((resolve) => {
    ch.consume(q1, (m) => { got.push(m.content.toString()); ch.ack(m); if (got.length === 2) resolve(); });
  });
  assert.deepStrictEqual(got, ['ab', 'az']);
  ok('topic-consume-ack');

  // confirm channel: ack, and nack from reject-publish
  const cc = await conn.createConfirmChannel();
  await cc.assertQueue('al.rp', { exclusive: true, arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' } });
  const res = await Promise.all([0, 1].map((i) => new Promise((resolve) =>
    cc.sendToQueue('al.rp', Buffer.from(String(i)), { persistent: true }, (err) => resolve(err ? 'nack' : 'ack')))));
  assert.deepStrictEqual(res, ['ack', 'nack']);
  ok('confirm-ack-and-nack');

  // nack requeue -> redelivered, then nack without requeue -> DLX
  await ch.assertExchange('al.dlx', 'fanout', { durable: false });
  const { queue: dead } = await ch.assertQueue('al.dead', { exclusive: true });
  await ch.bindQueue(dead, 'al.dlx', '');
  await ch.assertQueue('al.work', { exclusive: true, arguments: { 'x-dead-letter-exchange': 'al.dlx' } });
  ch.sendToQueue('al.work', Buffer.from('job'));
  let m = await getOne(ch, 'al.work', { noAck: false });
  assert.strictEqual(m.fields.redelivered, false);
  ch.nack(m, false, true);
  m = await getOne(ch, 'al.work', { noAck: false });
  assert.strictEqual(m.fields.redelivered, true);
  ok('nack-requeue');
  ch.nack(m, false, false);
  m = await getOne(ch, dead);
  assert.strictEqual(m.content.toString(), 'job');
  assert.strictEqual(m.properties.headers['x-death'][0].reason, 'rejected');
  ok('nack-dead-letter');

  // prefetch 1 with two consumers on one queue: round robin, one at a time each
  const pc = await conn.createChannel();
  await pc.prefetch(1);
  await pc.assertQueue('al.rr', { exclusive: true });
  const seen = { a: [], b: [] };
  const held = [];
  await pc.consume('al.rr', (x) => { seen.a.push(x.content.toString()); held.push(x); });
  await pc.consume('al.rr', (x) => { seen.b.push(x.content.toString()); held.push(x); });
  for (let i = 0; i < 4; i++) pc.sendToQueue('al.rr', Buffer.from(String(i)));
  for (let i = 0; i < 200 && held.length < 2; i++) await sleep(10);
  await sleep(100);
  assert.strictEqual(held.length, 2, 'prefetch 1 per consumer should hold 2 deliveries');
  assert.deepStrictEqual([seen.a.length, seen.b.length], [1, 1]);
  held.splice(0).forEach((x) => pc.ack(x));
  for (let i = 0; i < 200 && held.length < 2; i++) await sleep(10);
  assert.strictEqual(seen.a.length + seen.b.length, 4);
  held.splice(0).forEach((x) => pc.ack(x));
  ok('prefetch-round-robin');

  // headers exchange through amq.match
  const { queue: hq } = await ch.assertQueue('', { exclusive: true });
  await ch.bindQueue(hq, 'amq.match', '', { 'x-match': 'any', format: 'pdf', type: 'report' });
  ch.publish('amq.match', '', Buffer.from('yes'), { headers: { format: 'pdf' } });
  ch.publish('amq.match', '', Buffer.from('no'), { headers: { format: 'zip' } });
  m = await getOne(ch, hq);
  assert.strictEqual(m.content.toString(), 'yes');
  await sleep(50);
  assert.strictEqual(await ch.get(hq), false);
  ok('headers-any');

  // error codes
  let t = await expectChannelError(conn, 404, (c) => c.checkQueue('al.missing'));
  assert.ok(t.includes('NOT_FOUND'), t);
  ok('check-queue-404');
  t = await expectChannelError(conn, 406, (c) => c.assertExchange('al.topic', 'direct'));
  ok('inequivalent-406');
  t = await expectChannelError(conn, 403, (c) => c.assertExchange('amq.nope', 'direct'));
  ok('amq-prefix-403');
  t = await expectChannelError(conn, 406, async (c) => { c.ack({ fields: { deliveryTag: 77 } }); await c.checkQueue(q1); });
  ok('unknown-tag-406');

  // the connection survived every channel error
  ch.sendToQueue(hq, Buffer.from('still'));
  m = await getOne(ch, hq);
  assert.strictEqual(m.content.toString(), 'still');
  ok('connection-survives');

  // direct reply-to: an RPC round trip through amq.rabbitmq.reply-to
  const rq = await conn.createChannel();
  await rq.assertQueue('al.rpc', { exclusive: true });
  const reply = new Promise((resolve) => rq.consume('amq.rabbitmq.reply-to', (x) => resolve(x), { noAck: true }));
  await sleep(50);
  rq.sendToQueue('al.rpc', Buffer.from('2+2'), { replyTo: 'amq.rabbitmq.reply-to', correlationId: 'r1' });
  const req = await getOne(rq, 'al.rpc');
  assert.ok(req.properties.replyTo.startsWith('amq.rabbitmq.reply-to.'), req.properties.replyTo);
  const other = await amqp.connect(URL);
  const oc = await other.createChannel();
  oc.publish('', req.properties.replyTo, Buffer.from('4'), { correlationId: req.properties.correlationId });
  const answer = await reply;
  assert.strictEqual(answer.content.toString(), '4');
  assert.strictEqual(answer.properties.correlationId, 'r1');
  await other.close();
  t = await expectChannelError(conn, 406, (c) => c.consume('amq.rabbitmq.reply-to', () => {}, { noAck: false }));
  assert.ok(t.includes('reply consumer cannot acknowledge'), t);
  ok('direct-reply-to');

  await conn.close();
  console.log('ALL OK');
})().catch((e) => { console.error(e); process.exit(1); });
