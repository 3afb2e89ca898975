// The worker of `shoal up`'s default topology: a plain Node HTTP server, as
// the chapter writes it. Under `shoal up` (or `shoal cluster`) it runs as a
// cluster worker: listen(PORT) gets its socket from Shoal's primary, shared by
// every worker of the cluster.
//
// Each request it serves:
//   - counts itself at the statsd collector (STATSD_HOST/STATSD_PORT): one
//     plain UDP datagram `up.requests:1|c|#server:NAME` through `dgram`;
//   - publishes an event to the topic exchange "events" of the broker
//     (AMQP_URL) with routing key `web.NAME.request`, using the `amqplib` npm
//     module when it can be found (NODE_PATH), else it says once that it
//     does not publish.
const http = require('http');
const dgram = require('dgram');
const cluster = require('cluster');

const port = Number(process.env.PORT || 8001);
const name = process.env.SERVER_NAME || 'web';
const worker = cluster.isWorker ? cluster.worker.id : 0;

const statsd = process.env.STATSD_PORT ? dgram.createSocket('udp4') : null;
function count(metric) {
  if (!statsd) return;
  const line = Buffer.from(`${metric}:1|c|#server:${name}`);
  statsd.send(line, Number(process.env.STATSD_PORT), process.env.STATSD_HOST || '127.0.0.1');
}

let channel = null;
let connection = null;
if (process.env.AMQP_URL) {
  let amqp = null;
  try {
    amqp = require('amqplib');
  } catch (e) {
    console.log(`worker ${worker}: amqplib not found (NODE_PATH=${process.env.NODE_PATH || ''}); not publishing events`);
  }
  if (amqp) {
    amqp.connect(process.env.AMQP_URL)
      .then((conn) => { connection = conn; return conn.createChannel(); })
      .then(async (ch) => {
        await ch.assertExchange('events', 'topic', { durable: false });
        channel = ch;
      })
      .catch((e) => console.log(`worker ${worker}: broker unavailable (${e.message}); not publishing events`));
  }
}

http.createServer((req, res) => {
  count('up.requests');
  if (channel) {
    const event = { server: name, worker, pid: process.pid, method: req.method, url: req.url, at: Date.now() };
    channel.publish('events', `web.${name}.request`, Buffer.from(JSON.stringify(event)));
  }
  res.end(`Hello from ${name} worker ${worker} (pid ${process.pid})\n`);
}).listen(port);

// Asked to stop (the primary closes the IPC channel, as Node's own does):
// the server closes itself; let go of the broker and the statsd socket too,
// so that the process ends once its connections are done.
process.on('disconnect', () => {
  if (connection) connection.close().catch(() => {});
  if (statsd) statsd.close();
});
