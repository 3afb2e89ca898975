// The chapter's cluster program, unchanged: run it with plain `node` (Node's
// own primary) or under `shoal cluster -w 2 -- node chapter_cluster.js`,
// where Shoal is the primary and speaks Node's cluster protocol. The port
// comes from PORT so that tests can pick a free one; the chapter uses 8080.
var cluster = require('cluster');
var http = require('http');
var numCPUs = require('os').cpus().length;

if (cluster.isMaster) {
  for (var i = 0; i < numCPUs; i++) {
    cluster.fork();
  }
}

if (cluster.isWorker) {
  http.createServer(function(req, res) {
    res.writeHead(200);
    res.end("Hello from " + cluster.worker.id);
  }).listen(process.env.PORT || 8080);
}
