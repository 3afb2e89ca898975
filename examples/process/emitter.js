var cnt = 0;

setInterval(function() {
  process.stdout.write(" -> " + cnt++);
}, 100);
