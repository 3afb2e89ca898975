// A WebSocket echo server (npm `ws`) for trying the proxy's Upgrade tunnel.
// Usage: NODE_PATH=tests/node/node_modules node ws-echo.js PORT NAME
// Every text message comes back as "<NAME>: <message>".
var WebSocket = require('ws');
var port = Number(process.argv[2] || 8081);
var name = process.argv[3] || 'echo';
var wss = new WebSocket.Server({ host: '127.0.0.1', port: port }, function() {
  console.log('listening ' + wss.address().port);
});
wss.on('connection', function(ws) {
  ws.on('message', function(data) { ws.send(name + ': ' + data.toString()); });
});
