// Test harness shared by the chapter fixtures (not chapter code): exit once
// the expected number of lines has been logged (plus a short settle window so
// that any extra, wrong delivery is seen), or fail after a timeout.
module.exports = function (expected) {
  var seen = 0;
  var log = console.log;
  console.log = function () {
    log.apply(console, arguments);
    if (++seen === expected) {
      setTimeout(function () { process.exit(0); }, 300);
    }
  };
  setTimeout(function () { log('TIMEOUT after ' + seen + ' lines'); process.exit(2); }, 30000);
};
