// The chapter's direct and fanout variants: "nearly the same code as the
// topic example, changing only the exchange type and the bindings"
// (queue.bind(exchange, 'room-1') for direct; fanout ignores the key).
require('./chapter_harness')(5);
var PORT = parseInt(process.argv[2], 10);

var amqp = require('amqp');
var consumer = amqp.createConnection({ host: 'localhost', port: PORT });

consumer.on('ready', function() {
  var cnt = 3;
  var queueReady = function() {
    if(--cnt > 0) {
      return;
    }
    direct.publish('room-1', 'to room 1');
    direct.publish('room-2', 'to room 2');
    fanout.publish('anything', 'broadcast A');
    fanout.publish('', 'broadcast B');
  }

  var direct = consumer.exchange('chat-direct', {type: "direct"});
  var fanout = consumer.exchange('chat-fanout', {type: "fanout"});

  consumer.queue('room-1-queue', function(queue) {
    queue.bind(direct, 'room-1');
    queue.subscribe(function(message) {
      console.log('direct room-1 -> ' + message.data.toString('utf8'));
    });
    queueReady();
  });

  consumer.queue('fan-a', function(q) {
    q.bind(fanout, '');
    q.subscribe(function(message) {
      console.log('fanout a -> ' + message.data.toString('utf8'));
    });
    queueReady();
  });

  consumer.queue('fan-b', function(q) {
    q.bind(fanout, 'ignored-key');
    q.subscribe(function(message) {
      console.log('fanout b -> ' + message.data.toString('utf8'));
    });
    queueReady();
  });
});
