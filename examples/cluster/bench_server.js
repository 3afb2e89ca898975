// The small HTTP server of bench/cluster.sh. It runs three ways:
//   under `shoal cluster` (listens on the inherited fd 3),
//   alone (PORT=8080 node bench_server.js),
//   under Node's own cluster module (NODE_CLUSTER_WORKERS=2 PORT=8080 node bench_server.js).
// Every worker writes how many requests it served to $COUNT_DIR/<pid> a few
// times a second, so the benchmark can report each worker's share.
var cluster = require('cluster');
var http = require('http');
var fs = require('fs');

var workers = Number(process.env.NODE_CLUSTER_WORKERS || 0);
if (workers > 0 && cluster.isPrimary) {
  for (var i = 0; i < workers; i++) cluster.fork();
} else {
  var served = 0;
  var server = http.createServer(function(req, res) {
    served++;
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('hello\n');
  });
  server.keepAliveTimeout = 60000;
  if (process.env.LISTEN_FDS) server.listen({ fd: 3 });
  else server.listen(Number(process.env.PORT || 8080), '127.0.0.1');
  if (process.env.COUNT_DIR) {
    setInterval(function() {
      // Write then rename, so that a reader never sees a half-written file.
      var f = process.env.COUNT_DIR + '/' + process.pid;
      fs.writeFileSync(f + '.tmp', String(served));
      fs.renameSync(f + '.tmp', f);
    }, 200).unref();
  }
}
