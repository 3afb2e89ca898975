// The dashboard's script: ask /api/status every second and redraw the parts
// in place. Rates come from two consecutive samples. No framework, no build.
'use strict';

const EVERY_MS = 1000;
let previous = null; // { at: ms, counters: { key: number } }
let updates = 0;

function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function mib(bytes) { return bytes ? (bytes / 1048576).toFixed(1) + ' MiB' : '-'; }
function fact(label, field, value) {
  return `<span>${esc(label)} <b data-field="${esc(field)}">${esc(value)}</b></span>`;
}
function table(head, rows) {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>`;
}
function cell(field, value, cls) {
  return `<td data-field="${esc(field)}"${cls ? ` class="${cls}"` : ''}>${esc(value)}</td>`;
}

// A per-second rate of counter `key` (now `value`), from the previous sample.
function rate(now, key, value) {
  now.counters[key] = value;
  if (!previous || previous.counters[key] === undefined) return '-';
  const dt = (now.at - previous.at) / 1000;
  const d = value - previous.counters[key];
  return dt > 0 && d >= 0 ? (d / dt).toFixed(1) : '-';
}

function cluster(p) {
  const st = p.status || {};
  if (st.error) return `<p class="bad">${esc(st.error)}</p>`;
  const workers = st.workers || [];
  const online = workers.filter((w) => w.state === 'online').length;
  const rows = workers.map((w) => `<tr data-worker="${esc(w.id)}">${cell('id', w.id)}${cell('pid', w.pid)}`
    + `${cell('state', w.state, w.state === 'online' ? 'ok' : 'warn')}${cell('restarts', w.restarts, w.restarts ? 'warn' : '')}`
    + `${cell('rss', mib(w.rss_bytes))}${cell('cpu', (w.cpu_percent || 0).toFixed(1) + ' %')}${cell('last_exit', w.last_exit || '')}</tr>`);
  return `<div class="facts">${fact('serves', 'serves', (p.serves || []).join(', ') || '-')}`
    + `${fact('workers online', 'online', `${online}/${st.target ?? workers.length}`)}`
    + `${fact('primary pid', 'primary_pid', st.primary ? st.primary.pid : '-')}`
    + `${st.reloading ? '<span class="warn">rolling reload…</span>' : ''}</div>`
    + `<div class="facts"><code>${esc(p.command)}</code></div>`
    + table(['worker', 'pid', 'state', 'restarts', 'memory', 'cpu', 'last exit'], rows);
}

function proxy(p, now) {
  const st = p.status || {};
  const rows = [];
  for (const u of st.upstreams || []) {
    for (const s of u.servers || []) {
      const r = s.responses || {};
      const answered = ['1xx', '2xx', '3xx', '4xx', '5xx'].reduce((a, k) => a + (r[k] || 0), 0);
      // The proxy's state (up, down, draining, unhealthy, failed), in the table's words.
      const health = { up: 'healthy', down: 'down (config)' }[s.state] || s.state || '?';
      rows.push(`<tr data-server="${esc(s.address)}">${cell('upstream', u.name)}${cell('address', s.address)}`
        + `${cell('health', health, health === 'healthy' ? 'ok' : 'bad')}${cell('active', s.active)}`
        + `${cell('responses', answered)}${cell('5xx', r['5xx'] || 0, r['5xx'] ? 'bad' : '')}${cell('failures', s.failures)}</tr>`);
    }
  }
  return `<div class="facts">${fact('listens', 'listen', (p.listen || []).join(', '))}`
    + `${fact('requests', 'requests_total', st.requests_total ?? 0)}`
    + `${fact('req/s', 'requests_rate', rate(now, p.part + '.requests', st.requests_total ?? 0))}`
    + `${fact('active connections', 'active_connections', st.active_connections ?? 0)}`
    + `${fact('generation', 'generation', st.generation ?? '-')}</div>`
    + table(['upstream', 'server', 'health', 'active', 'responses', '5xx', 'failures'], rows);
}

function broker(p, now) {
  const o = p.overview || {};
  if (o.ok === false) return `<p class="bad">${esc(o.error)}</p>`;
  const q = o.queue_totals || {};
  const m = o.message_stats || {};
  const t = o.object_totals || {};
  const rows = (p.queues || []).map((x) => `<tr data-queue="${esc(x.name)}">${cell('vhost', x.vhost)}${cell('name', x.name)}`
    + `${cell('ready', x.messages_ready)}${cell('unacked', x.messages_unacknowledged)}${cell('consumers', x.consumers)}`
    + `${cell('published', x.published)}</tr>`);
  const more = p.queues_total > (p.queues || []).length ? `<p>… and ${p.queues_total - p.queues.length} more queues</p>` : '';
  return `<div class="facts">${fact('amqp', 'listen', p.listen)}${fact('connections', 'connections', t.connections ?? 0)}`
    + `${fact('queues', 'queues', t.queues ?? 0)}${fact('ready', 'ready', q.messages_ready ?? 0)}`
    + `${fact('unacked', 'unacked', q.messages_unacknowledged ?? 0)}</div>`
    + `<div class="facts">${fact('published', 'published', m.publish ?? 0)}`
    + `${fact('publish/s', 'publish_rate', rate(now, p.part + '.publish', m.publish ?? 0))}`
    + `${fact('deliver/s', 'deliver_rate', rate(now, p.part + '.deliver', m.deliver_get ?? 0))}`
    + `${fact('ack/s', 'ack_rate', rate(now, p.part + '.ack', m.ack ?? 0))}`
    + `${o.alarm ? '<span class="bad">memory alarm: publishers blocked</span>' : ''}</div>`
    + (rows.length ? table(['vhost', 'queue', 'ready', 'unacked', 'consumers', 'published'], rows) : '<p>no queues</p>') + more;
}

function stats(p, now) {
  const s = p.status || {};
  if (s.ok === false) return `<p class="bad">${esc(s.error)}</p>`;
  const h = s.health || {};
  return `<div class="facts">${fact('udp', 'udp', (p.udp || []).join(', '))}`
    + `${p.http ? fact('metrics', 'http', `http://${p.http}/metrics`) : ''}</div>`
    + `<div class="facts">${fact('packets', 'packets', h.packets ?? 0)}`
    + `${fact('packets/s', 'packets_rate', rate(now, p.part + '.packets', h.packets ?? 0))}`
    + `${fact('metrics', 'metrics', h.metrics ?? 0)}`
    + `${fact('metrics/s', 'metrics_rate', rate(now, p.part + '.metrics', h.metrics ?? 0))}`
    + `${fact('series', 'series', h.series ?? 0)}`
    + `${fact('bad lines', 'bad_lines', h.bad_lines ?? 0)}`
    + `${fact('kernel drops', 'kernel_drops', h.kernel_drops ?? 0)}</div>`
    + (s.last_bad_line ? `<div class="facts warn">last bad line: <code>${esc(JSON.stringify(s.last_bad_line))}</code></div>` : '');
}

const KINDS = { cluster, proxy, broker, stats };

function draw(doc) {
  const up = doc.up || {};
  const now = { at: Date.now(), counters: {} };
  document.getElementById('name').textContent = up.name ? `· ${up.name}` : '';
  document.getElementById('meta').textContent = `${up.file || ''} · pid ${up.pid ?? '-'} · updated ${new Date().toLocaleTimeString()}`;
  const html = (up.parts || []).map((p) => {
    const body = KINDS[p.kind] ? KINDS[p.kind](p, now) : `<pre>${esc(JSON.stringify(p, null, 1))}</pre>`;
    return `<section class="part" data-part="${esc(p.part)}" data-kind="${esc(p.kind)}"><h2>${esc(p.part)}<span class="kind">${esc(p.kind)}</span></h2>${body}</section>`;
  }).join('');
  document.getElementById('parts').innerHTML = html;
  previous = now;
}

async function tick() {
  const problem = document.getElementById('problem');
  try {
    const r = await fetch('/api/status', { cache: 'no-store' });
    const doc = await r.json();
    if (doc.ok === false) throw new Error(doc.error || 'status refused');
    draw(doc);
    problem.hidden = true;
    updates += 1;
    document.body.dataset.updates = String(updates);
  } catch (e) {
    problem.textContent = `shoal up does not answer (${e.message}); retrying`;
    problem.hidden = false;
  }
  setTimeout(tick, EVERY_MS);
}

tick();
