// The chapter's first example ("the most basic consumer listens to all
// messages") plus its publish step, verbatim except host and port.
require('./chapter_harness')(1);
var PORT = parseInt(process.argv[2], 10);

var amqp = require('amqp');

var consumer = amqp.createConnection({ host: 'localhost', port: PORT });
var exchange;

consumer.on('ready', function() {
  exchange = consumer.exchange('node-topic-exchange', {type: "topic"});
  consumer.queue('node-topic-queue', function(q) {

    q.bind(exchange, '#');

    q.subscribe(function(message) {
      // Messages are buffers
      //
      console.log(message.data.toString('utf8'));
    }).addCallback(function() {
      // The chapter's publish step ("consumer.on('ready', ...
      // exchange.publish(...)"), run once the subscription is confirmed so
      // that the message cannot race the bind.
      exchange.publish("some-topic", "Hello!");
    });
  });
});

// Hello!
