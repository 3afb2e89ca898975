// The chapter's multicast client (Node), joined on the loopback interface so
// that it works with `shoal dgram send` on one machine without touching the
// network:  node examples/dgram/client.js Client1 230.1.2.3
const dgram = require('dgram');
const [label = 'Client1', group = '230.1.2.3', port = '5554'] = process.argv.slice(2);

dgram.createSocket({ type: 'udp4', reuseAddr: true })
  .on('message', function (message, remote) {
    console.log(label + ' received message ' + message + ' from ' + remote.address + ':' + remote.port);
  })
  .on('listening', function () {
    this.addMembership(group, '127.0.0.1');
  })
  .bind(Number(port), group);
