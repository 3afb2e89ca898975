// The chapter's multicast sender (Node), pinned to the loopback interface:
//   node examples/dgram/sender.js 230.1.2.3 230.3.2.1
// pairs with `shoal dgram listen --bind 230.1.2.3:5554 --group 230.1.2.3`.
const dgram = require('dgram');
const groups = process.argv.slice(2).length ? process.argv.slice(2) : ['230.1.2.3'];
const port = 5554;
const socket = dgram.createSocket('udp4');

socket.bind(0, '127.0.0.1', function () {
  socket.setMulticastInterface('127.0.0.1');
  socket.setMulticastTTL(64);
  let cnt = 1;
  (function sender() {
    const msg = Buffer.from('This is message #' + cnt);
    for (const g of groups) socket.send(msg, 0, msg.length, port, g);
    ++cnt;
    setTimeout(sender, 1000);
  })();
});
