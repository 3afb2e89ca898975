// The chapter's Node server, answering "HOST <name>".
// Usage: node server.js PORT NAME   (PORT 0 picks a free port; NAME e.g. one, two)
// Prints "listening <port>" once it accepts connections.
var http = require('http');
var port = Number(process.argv[2] || 8080);
var name = process.argv[3] || 'one';

var server = http.createServer(function(req, res) {
  res.writeHead(200, {
    "Content-Type" : "text/html"
  });
  res.write('HOST ' + name);
  res.end();
}).listen(port, '127.0.0.1', function() {
  console.log('listening ' + server.address().port);
});
