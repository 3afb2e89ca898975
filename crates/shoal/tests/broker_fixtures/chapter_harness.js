// Test harness shared by the chapter fixtures (not chapter code): exit once
// the expected number of lines has been logged (plus a short settle window so
// that any extra, wrong delivery is seen), or fail after a timeout.
function install(expected) {
  var seen = 0;
  var log = console.log;
  console.log = function () {
    log.apply(console, arguments);
    if (++seen === expected) {
      setTimeout(function () { process.exit(0); }, 300);
    }
  };
  setTimeout(function () { log('TIMEOUT after ' + seen + ' lines'); process.exit(2); }, 30000);
}

module.exports = install;
// Preloaded with `node -r chapter_harness.js script.js`: EXPECT_LINES says how many.
if (process.env.EXPECT_LINES) install(parseInt(process.env.EXPECT_LINES, 10));
