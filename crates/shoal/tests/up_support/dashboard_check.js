// Drives the `shoal up` dashboard in a real browser (Debian's Chromium through
// playwright-core) and checks that it shows every part and that its numbers
// change without a reload: requests made through the proxy raise the proxy's
// request count and the collector's packet count; a worker killed here shows
// its replacement's pid and a restart.
//
// usage: node dashboard_check.js DASHBOARD_URL PROXY_ADDR (host:port)
// Prints one JSON line with what it saw; exits 1 with the reason otherwise.
'use strict';
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [dashboard, proxyAddr] = process.argv.slice(2);
const [proxyHost, proxyPort] = proxyAddr.split(':');
const WAIT = 30000;

function get(p) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: proxyHost, port: Number(proxyPort), path: p, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
  });
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-dashboard-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = context.pages()[0] || await context.newPage();
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations += 1; });
    const failed = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    await page.goto(dashboard);
    // Every part is shown, with both workers.
    await page.waitForSelector('section[data-part="cluster.web"] tr[data-worker="2"]', { timeout: WAIT });
    for (const part of ['broker', 'stats', 'cluster.web', 'proxy']) {
      await page.waitForSelector(`section[data-part="${part}"]`, { timeout: WAIT });
    }
    await page.evaluate(() => { window.__sameDocument = true; });
    const num = (sel) => page.$eval(sel, (e) => Number(e.textContent));
    const text = (sel) => page.$eval(sel, (e) => e.textContent);

    // Requests through the proxy: its count and the collector's packets rise.
    const requests0 = await num('section[data-part="proxy"] [data-field="requests_total"]');
    const packets0 = await num('section[data-part="stats"] [data-field="packets"]');
    const n = 20;
    for (let i = 0; i < n; i++) {
      const code = await get('/');
      if (code !== 200) throw new Error(`GET through the proxy answered ${code}`);
    }
    await page.waitForFunction(([want]) => {
      const e = document.querySelector('section[data-part="proxy"] [data-field="requests_total"]');
      return e && Number(e.textContent) >= want;
    }, [requests0 + n], { timeout: WAIT });
    await page.waitForFunction(([want]) => {
      const e = document.querySelector('section[data-part="stats"] [data-field="packets"]');
      return e && Number(e.textContent) >= want;
    }, [packets0 + n], { timeout: WAIT });
    const requests1 = await num('section[data-part="proxy"] [data-field="requests_total"]');
    const responses = await page.$$eval('section[data-part="proxy"] tr[data-server] [data-field="responses"]',
      (es) => es.map((e) => Number(e.textContent)));

    // A worker killed: the page shows the new pid and the restart.
    const row = 'section[data-part="cluster.web"] tr[data-worker="1"]';
    const pid0 = Number(await text(`${row} [data-field="pid"]`));
    process.kill(pid0, 'SIGKILL');
    await page.waitForFunction(([sel, old]) => {
      const pid = document.querySelector(`${sel} [data-field="pid"]`);
      const restarts = document.querySelector(`${sel} [data-field="restarts"]`);
      const state = document.querySelector(`${sel} [data-field="state"]`);
      return pid && Number(pid.textContent) !== old && Number(restarts.textContent) >= 1
        && state.textContent === 'online';
    }, [row, pid0], { timeout: WAIT });
    const pid1 = Number(await text(`${row} [data-field="pid"]`));

    const same = await page.evaluate(() => window.__sameDocument === true);
    if (!same || navigations !== 1) throw new Error(`the page was reloaded (${navigations} navigations)`);
    const updates = await page.evaluate(() => Number(document.body.dataset.updates));
    const problem = await page.$eval('#problem', (e) => (e.hidden ? '' : e.textContent));
    console.log(JSON.stringify({ requests0, requests1, packets0, responses, pid0, pid1, updates, navigations, problem, failed }));
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(`dashboard check failed: ${e.stack || e}`); process.exit(1); });
