// The worker half of the chapter's cluster example. Under `shoal cluster` the
// primary is Shoal, so only two things change: the server listens on the
// socket Shoal passes as fd 3 instead of `.listen(8080)`, and the worker id
// comes from SHOAL_WORKER_ID instead of `cluster.worker.id`.
var http = require('http');

http.createServer(function(req, res) {
  res.writeHead(200);
  res.end("Hello from " + process.env.SHOAL_WORKER_ID);
}).listen({fd: 3});
