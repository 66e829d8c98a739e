// Stevedore dashboard: polls the admin API and renders it. No build step, no CDN.
'use strict';

const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem('stevedore-admin-token') || '';
let chart;

function api(path, options = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(`/api${path}`, { ...options, headers }).then(async (res) => {
    if (res.status === 401) {
      token = window.prompt('Admin token for this Stevedore') || '';
      localStorage.setItem('stevedore-admin-token', token);
      throw new Error('admin token required');
    }
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  });
}

function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function clock(ms) {
  const d = new Date(ms);
  return `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

/** An endpoint's health in words: no circuit jargon. */
function health(e) {
  if (e.state === 'open') return e.openUntil && e.openUntil > Date.now() ? `down, retrying at ${clock(e.openUntil)}` : 'down, retrying now';
  if (e.state === 'down') return `failing (${e.consecutiveFailures} in a row)`;
  return 'up';
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function renderStats(stats) {
  const t = stats.totals;
  $('hit-ratio').textContent = t.hitRatio === null ? '–' : `${(t.hitRatio * 100).toFixed(1)}%`;
  $('hit-detail').textContent = `${t.hits} hits · ${t.coalesced} coalesced · ${t.stale} stale · ${t.misses} misses`;
  $('requests').textContent = String(t.hits + t.misses + t.coalesced + t.stale + t.errors);
  $('request-detail').textContent = `${t.errors} errors (5xx) · ${t.notFoundCached} answered from the 404 cache`;
  $('request-detail').className = t.errors > 0 ? 'error' : 'muted';
  $('bytes-saved').textContent = bytes(t.bytesFromCache);
  $('bytes-detail').textContent = `served from cache · ${bytes(t.bytesFromUpstream)} fetched upstream`;
  $('cache-size').textContent = bytes(t.cacheBytes);
  const used = t.quotaBytes > 0 ? t.cacheBytes / t.quotaBytes : 0;
  $('cache-bar').style.width = `${Math.min(100, used * 100).toFixed(1)}%`;
  $('cache-bar').parentElement.className = used > 0.95 ? 'bar bad' : used > 0.8 ? 'bar warn' : 'bar';
  $('cache-detail').textContent = `${t.blobs} blobs · ${t.quotaBytes > 0 ? `quota ${bytes(t.quotaBytes)}` : 'no quota'}`;
  renderChart(stats.series, stats.errorSeries);
  renderInstance(stats.instance);
}

function renderInstance(i) {
  const disk = i.diskFreeBytes === null ? 'free disk unknown' : `${bytes(i.diskFreeBytes)} free of ${bytes(i.diskSizeBytes)}`;
  $('instance').textContent = `${i.id} · v${i.version} · up ${duration(i.uptimeSeconds)} · ${disk}`;
}

function renderChart(series, errorSeries) {
  // One x axis for both: the minutes with traffic and the minutes with errors.
  const byMinute = new Map(series.map((p) => [p.minute, { ...p, errors: 0 }]));
  for (const e of errorSeries) {
    const point = byMinute.get(e.minute) || { minute: e.minute, hits: 0, misses: 0, coalesced: 0, stale: 0 };
    byMinute.set(e.minute, { ...point, errors: e.errors });
  }
  const points = [...byMinute.values()].sort((a, b) => a.minute - b.minute);
  const x = points.map((p) => p.minute / 1000);
  const ratio = points.map((p) => {
    const served = p.hits + p.coalesced + p.stale;
    const all = served + p.misses;
    return all > 0 ? (served / all) * 100 : null;
  });
  const requests = points.map((p) => p.hits + p.coalesced + p.stale + p.misses + p.errors);
  const errors = points.map((p) => p.errors);
  const data = [x, ratio, requests, errors];
  const width = $('chart').clientWidth || 600;
  if (!chart) {
    chart = new uPlot({
      width,
      height: 220,
      series: [
        {},
        { label: 'hit ratio %', stroke: '#3fb950', width: 2, scale: '%' },
        { label: 'requests', stroke: '#58a6ff', width: 1, scale: 'n' },
        { label: 'errors (5xx)', stroke: '#f85149', width: 2, scale: 'n' },
      ],
      axes: [
        { stroke: '#8b98a5', grid: { stroke: '#263241' } },
        { scale: '%', stroke: '#8b98a5', grid: { stroke: '#263241' } },
        { scale: 'n', side: 1, stroke: '#8b98a5', grid: { show: false } },
      ],
      scales: {
        x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 86400, now]; } },
        '%': { range: [0, 100] },
      },
    }, data, $('chart'));
  } else {
    chart.setSize({ width, height: 220 });
    chart.setData(data);
  }
}

function renderUpstreams(data) {
  const rows = [];
  for (const upstream of data.upstreams) {
    for (const e of upstream.endpoints) {
      const rate = e.rateLimit;
      let budget = el('span', { class: 'muted' }, 'no rate-limit headers seen');
      if (rate && rate.limit) {
        const left = rate.remaining / rate.limit;
        const resetIn = rate.windowSeconds ? Math.max(0, rate.observedAt / 1000 + rate.windowSeconds - Date.now() / 1000) : null;
        budget = el('div', {},
          el('span', { 'data-testid': 'ratelimit-remaining', 'data-endpoint': e.url }, `${rate.remaining} / ${rate.limit}`),
          el('div', { class: left < 0.1 ? 'bar bad' : left < 0.3 ? 'bar warn' : 'bar' }, el('div', { style: `width:${(left * 100).toFixed(1)}%` })),
          el('span', { class: 'muted' }, resetIn === null ? '' : `window resets within ${duration(resetIn)} · ${e.credential}`));
        budget.querySelector('.bar > div').style.width = `${(left * 100).toFixed(1)}%`;
      }
      rows.push(el('tr', { class: e.state === 'up' ? '' : `endpoint-${e.state}` },
        el('td', {}, el('strong', {}, upstream.registry), el('div', { class: 'endpoint' }, e.url),
          e.lastError ? el('div', { class: 'error' }, `${e.lastError.message} (${ago(e.lastError.at)})`) : ''),
        el('td', {}, el('span', { class: `badge ${e.state}`, 'data-testid': 'health', 'data-endpoint': e.url }, health(e))),
        el('td', { class: 'num' }, e.latencyMs === null ? '–' : `${e.latencyMs} ms`),
        el('td', {}, budget),
        el('td', { class: 'num' }, String(e.manifestGets))));
    }
  }
  $('upstreams').replaceChildren(...rows);
}

function renderJobs(data) {
  const lastByJob = new Map();
  for (const run of data.runs) if (!lastByJob.has(run.job)) lastByJob.set(run.job, run);
  $('jobs').replaceChildren(...(data.configured.length === 0
    ? [el('p', { class: 'muted' }, 'No warm-up jobs configured.')]
    : data.configured.map((job) => {
      const last = lastByJob.get(job.name);
      const button = el('button', { 'data-testid': `run-warmup-${job.name}` }, 'Run warm-up');
      button.addEventListener('click', () => {
        button.disabled = true;
        api('/warm', { method: 'POST', body: JSON.stringify({ job: job.name }) }).then(refresh).finally(() => { button.disabled = false; });
      });
      return el('div', { class: 'job' },
        el('div', {}, el('strong', {}, job.name), el('div', { class: 'muted' },
          `${job.images.length} images · ${Array.isArray(job.platforms) ? job.platforms.join(', ') : 'all platforms'}${job.pin ? ' · pinned' : ''} · next ${job.nextRun ? new Date(job.nextRun).toLocaleString() : '–'}`),
          last ? el('div', {}, el('span', { class: `badge ${last.status}` }, last.status), ' ', el('span', { class: 'muted' }, ago(last.startedAt))) : '',
          last ? why(last) : ''),
        button);
    })));
  $('runs').replaceChildren(...data.runs.slice(0, 10).map((run) => el('tr', { 'data-job': run.job },
    el('td', { class: 'num' }, String(run.id)),
    el('td', {}, run.job),
    el('td', {}, ago(run.startedAt)),
    el('td', {}, el('span', { class: `badge ${run.status}` }, run.status), why(run)),
    el('td', { class: 'num' }, `${run.blobsFetched} · ${bytes(run.bytes)}`),
    el('td', { class: 'num' }, String(run.blobsSkipped)))));
}

/** Why a run failed or stopped: its first error (and how many more), or its message. */
function why(run) {
  if (run.status !== 'failed' && run.status !== 'stopped') return '';
  const first = run.errors && run.errors.length > 0 ? run.errors[0] : run.message;
  if (!first) return '';
  const more = run.errors && run.errors.length > 1 ? ` (and ${run.errors.length - 1} more)` : '';
  return el('div', { class: 'error', 'data-testid': 'run-error' }, `${first}${more}`);
}

function renderCluster(data) {
  $('cluster-mode').textContent = data.mode === 'single'
    ? 'A single replica (no cluster.redis configured).'
    : data.redisConnected ? 'Replicas sharing one bucket and one Redis.' : 'Redis does not answer: this replica serves on its own until it does.';
  $('replicas').replaceChildren(...data.replicas.map((r) => el('tr', { 'data-replica': r.id },
    el('td', {}, el('strong', {}, r.id), el('div', { class: 'endpoint' }, r.url || '–')),
    el('td', {}, r.lastHeartbeatMsAgo < 1000 ? 'just now' : `${(r.lastHeartbeatMsAgo / 1000).toFixed(1)} s ago`),
    el('td', { class: 'num' }, String(r.fillsInProgress)),
    el('td', {}, [r.leader ? 'housekeeping' : '', r.self ? 'this one' : ''].filter(Boolean).join(' · ') || '–'))));
}

/** A notification endpoint's state in words. */
function delivery(e) {
  if (e.state === 'sending') return 'delivering';
  if (e.state === 'retrying') return e.nextAttemptAt && e.nextAttemptAt > Date.now() ? `retrying at ${clock(e.nextAttemptAt)}` : 'retrying now';
  return e.state; // idle, disabled
}

function renderNotifications(data) {
  $('notifications-panel').hidden = data.endpoints.length === 0;
  $('notifications-recorded').textContent = `${data.recorded} events recorded since start`;
  $('notifications').replaceChildren(...data.endpoints.map((e) => el('tr', { class: `notify-${e.state}`, 'data-endpoint': e.name },
    el('td', {}, el('strong', {}, e.name), el('div', { class: 'endpoint' }, e.url),
      e.lastFailure ? el('div', { class: 'error', 'data-testid': 'notify-error' }, `${e.lastFailure.message} (${ago(e.lastFailure.at)})`) : ''),
    el('td', {}, el('span', { class: `badge ${e.state}`, 'data-testid': 'notify-state' }, delivery(e))),
    el('td', { class: 'num' }, String(e.pending)),
    el('td', { class: 'num' }, String(e.delivered)),
    el('td', { class: 'num' }, String(e.failedAttempts)),
    el('td', { class: e.dropped > 0 ? 'num error' : 'num' }, String(e.dropped)),
    el('td', {}, e.lastSuccessAt ? clock(e.lastSuccessAt) : 'never'))));
}

function renderImages(data) {
  $('images').replaceChildren(...data.images.slice(0, 15).map((image) => el('tr', {},
    el('td', {}, `${image.upstream}/${image.repo}:${image.tag}`),
    el('td', { class: 'num' }, bytes(image.bytes)),
    el('td', {}, ago(image.lastPull)),
    el('td', { class: 'num' }, String(image.hits)))));
}

async function refresh() {
  try {
    const [stats, upstreams, jobs, images, cluster, notifications] = await Promise.all([api('/stats'), api('/upstreams'), api('/jobs'), api('/images'), api('/cluster'), api('/notifications')]);
    renderStats(stats);
    renderUpstreams(upstreams);
    renderCluster(cluster);
    renderJobs(jobs);
    renderImages(images);
    renderNotifications(notifications);
    $('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('status').className = 'muted';
  } catch (err) {
    $('status').textContent = `update failed: ${err.message}`;
    $('status').className = 'error';
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
window.addEventListener('resize', () => chart && chart.setSize({ width: $('chart').clientWidth, height: 220 }));
