// Observability end to end: exact metrics after a scripted sequence of pulls,
// the admin API, an audit log, redaction, and the dashboard in a real browser.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { freePort, startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { MediaTypes, pushBlob, pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';
import { waitFor, waitForAsync } from '../support/wait.js';
import { findChromium, requirement } from '../support/requirements.js';
import type { EndpointStatus } from '../../src/notify/status.js';

const chromiumPath = await findChromium();
const browserTools = requirement('Chromium', chromiumPath ? undefined : 'no browser: set CHROME_PATH, or install Debian\'s chromium');
const MiB = 1024 * 1024;
const PASSWORD = 'dashboard-secret-pw';
const ALL = [MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest].join(', ');
const outputDir = fileURLToPath(new URL('../../test-output/', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'stevedore-dashboard-'));
const auditFile = join(scratch, 'audit.log');
let registry: RegistryHandle;
let hub: HubDouble;
let mirror: TestMirror;
let image: PushedImage;
let blobX: { digest: string; size: number };
let blobY: { digest: string; size: number };

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry.url, 'team/web', 'v1', { layers: [50 * 1024], format: 'docker' });
  blobX = await pushBlob(registry.url, 'team/web', { size: 1 * MiB, seed: 'dash-x' });
  blobY = await pushBlob(registry.url, 'team/web', { size: 4 * MiB, seed: 'dash-y' });
  hub = await startHubDouble({ upstream: registry.url, credentials: { username: 'dash', password: PASSWORD } });
  mirror = await startMirror({
    upstreams: [{ registry: 'docker.io', url: hub.url, username: 'dash', password: PASSWORD }],
    cache: { tagTtl: '0s' },
    warmup: [{ name: 'web', schedule: '0 0 1 1 *', images: ['team/web:v1'] }],
    auditLog: auditFile,
  });
});

after(async () => {
  await mirror?.stop();
  if (mirror) rmSync(mirror.dir, { recursive: true, force: true }); // the restarted mirror reused the first one's directory
  await hub?.stop();
  await registry?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

interface Stats {
  totals: { hits: number; misses: number; coalesced: number; stale: number; bytesFromCache: number; bytesFromUpstream: number; hitRatio: number; cacheBytes: number; blobs: number };
  series: { minute: number; hits: number }[];
}

const metricValue = (text: string, name: string, labels: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
};

test('after a miss, a hit, a coalesced pull and a stale serve, /metrics and /api/stats show exactly those', async () => {
  const blob = (d: string): string => `${mirror.url}/v2/team/web/blobs/${d}`;
  assert.equal((await streamDigest(blob(blobX.digest))).digest, blobX.digest); // miss
  await mirror.stevedore.mirror.fills.drain(10_000);
  assert.equal((await streamDigest(blob(blobX.digest))).digest, blobX.digest); // hit
  // The upstream holds its answer until the second client has joined the fill.
  const held = hub.hold((r) => r.kind === 'blobGet' && r.path.endsWith(blobY.digest));
  try {
    const fillOfY = () => mirror.stevedore.mirror.fills.snapshot().find((f) => f.digest === blobY.digest);
    const a = streamDigest(blob(blobY.digest));
    await waitFor('the fill of blob Y', () => held.waiting === 1);
    const b = streamDigest(blob(blobY.digest));
    await waitFor('the second client to join it', () => fillOfY()?.joined === 2);
    held.release();
    assert.equal((await a).digest, blobY.digest); // miss
    assert.equal((await b).digest, blobY.digest); // coalesced
  } finally {
    held.release();
  }
  await mirror.stevedore.mirror.fills.drain(10_000);
  const manifestUrl = `${mirror.url}/v2/team/web/manifests/v1`;
  assert.equal((await get(manifestUrl, { accept: ALL })).status, 200); // miss
  hub.failNext(1, 503, {}, 'manifestHead');
  assert.equal((await get(manifestUrl, { accept: ALL })).status, 200); // stale

  const metrics = await get(`${mirror.url}/metrics`);
  assert.equal(metrics.status, 200);
  const text = metrics.body.toString();
  const result = (kind: string, r: string): number => metricValue(text, 'stevedore_cache_results_total', `upstream="docker.io",kind="${kind}",result="${r}"`);
  assert.deepEqual(
    { blobMiss: result('blob', 'miss'), blobHit: result('blob', 'hit'), blobCoalesced: result('blob', 'coalesced'), manifestMiss: result('manifest', 'miss'), manifestStale: result('manifest', 'stale') },
    { blobMiss: 2, blobHit: 1, blobCoalesced: 1, manifestMiss: 1, manifestStale: 1 },
  );
  const manifestBytes = image.manifestBytes.length;
  assert.equal(metricValue(text, 'stevedore_bytes_served_from_cache_total', 'upstream="docker.io"'), blobX.size + blobY.size + manifestBytes);
  assert.equal(metricValue(text, 'stevedore_bytes_fetched_from_upstream_total', 'upstream="docker.io"'), blobX.size + blobY.size + manifestBytes);
  assert.ok(metricValue(text, 'stevedore_http_requests_total', 'route="blobs",method="GET",status="200"') >= 4);
  assert.equal(metricValue(text, 'stevedore_ratelimit_limit', `upstream="docker.io",endpoint="${hub.url}",credential="configured"`), 100);
  assert.ok(metricValue(text, 'stevedore_ratelimit_remaining', `upstream="docker.io",endpoint="${hub.url}",credential="configured"`) > 0);
  assert.equal(metricValue(text, 'stevedore_upstream_manifest_gets_total', `upstream="docker.io",endpoint="${hub.url}"`), 1);
  assert.match(text, /^# TYPE stevedore_upstream_manifest_gets_total counter$/m);
  assert.match(text, /^process_resident_memory_bytes \d+/m, 'default process metrics');

  const stats = JSON.parse((await get(`${mirror.url}/api/stats`)).body.toString()) as Stats;
  assert.deepEqual(
    { hits: stats.totals.hits, misses: stats.totals.misses, coalesced: stats.totals.coalesced, stale: stats.totals.stale },
    { hits: 1, misses: 3, coalesced: 1, stale: 1 },
  );
  assert.equal(stats.totals.bytesFromCache, blobX.size + blobY.size + manifestBytes);
  assert.equal(stats.totals.bytesFromUpstream, blobX.size + blobY.size + manifestBytes);
  assert.equal(stats.totals.hitRatio, 3 / 6);
  assert.deepEqual({ bytes: stats.totals.cacheBytes, blobs: stats.totals.blobs }, mirror.stevedore.cache.index.totals());
  assert.equal(stats.series.reduce((sum, p) => sum + p.hits, 0), 1);

  const upstreams = JSON.parse((await get(`${mirror.url}/api/upstreams`)).body.toString()) as { upstreams: { registry: string; endpoints: { url: string; state: string; rateLimit: { limit: number; remaining: number; windowSeconds: number } }[] }[] };
  const endpoint = upstreams.upstreams[0]!.endpoints[0]!;
  assert.equal(endpoint.url, hub.url);
  assert.equal(endpoint.state, 'down', 'the injected 503 counts against the endpoint until it answers again');
  assert.equal(endpoint.rateLimit.limit, 100);
  assert.equal(endpoint.rateLimit.windowSeconds, 21600);
  const images = JSON.parse((await get(`${mirror.url}/api/images`)).body.toString()) as { images: { repo: string; tag: string; bytes: number }[] };
  assert.deepEqual(images.images.map((i) => `${i.repo}:${i.tag}`), ['team/web:v1']);
  assert.equal(images.images[0]!.bytes, manifestBytes, 'only the manifest of that image is cached so far');
});

test('the admin API takes JSON from its own origin only (no cross-site POSTs)', async () => {
  const { request } = await import('undici');
  const post = async (headers: Record<string, string>): Promise<number> => {
    const res = await request(`${mirror.url}/api/gc`, { method: 'POST', headers, body: '{"dryRun":true}' });
    await res.body.dump();
    return res.statusCode;
  };
  assert.equal(await post({ 'content-type': 'text/plain' }), 415);
  assert.equal(await post({ 'content-type': 'application/json', origin: 'http://evil.example' }), 403);
  assert.equal(await post({ 'content-type': 'application/json', origin: mirror.url }), 200);
  assert.equal(await post({ 'content-type': 'application/json' }), 200);
});

test('an audit line per pull, and no secret in the logs', async () => {
  await mirror.stevedore.close();
  const audit = readFileSync(auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { msg: string; repo: string; digest?: string; client: string });
  assert.ok(audit.length >= 6);
  assert.ok(audit.every((a) => a.msg === 'pull' && a.repo === 'team/web' && a.client.includes('127.0.0.1')));
  assert.ok(audit.some((a) => a.digest === blobX.digest));
  const logs = mirror.rawLogs();
  assert.ok(!logs.includes(PASSWORD), 'no password');
  assert.ok(!logs.includes(Buffer.from(`dash:${PASSWORD}`).toString('base64')), 'no Basic credentials');
  const tokens = hub.authSeen().filter((a) => a.authorization.startsWith('Bearer ')).map((a) => a.authorization.slice(7));
  assert.ok(tokens.length > 0);
  for (const token of tokens) assert.ok(!logs.includes(token), 'no bearer token');
  // Restart on the same cache: the statistics survive.
  const restarted = await startMirror({ upstreams: [{ registry: 'docker.io', url: hub.url, username: 'dash', password: PASSWORD }], dir: mirror.dir, warmup: [{ name: 'web', schedule: '0 0 1 1 *', images: ['team/web:v1'] }] });
  mirror = restarted;
  const stats = JSON.parse((await get(`${mirror.url}/api/stats`)).body.toString()) as Stats;
  assert.deepEqual({ hits: stats.totals.hits, misses: stats.totals.misses }, { hits: 1, misses: 3 });
});

/** The dashboard's size format, written again here as the oracle. */
function shownBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

interface Endpoint {
  url: string;
  state: string;
  openUntil: number | null;
  consecutiveFailures: number;
  latencyMs: number | null;
  manifestGets: number;
  rateLimit: { limit: number; remaining: number } | null;
}

/** The dashboard's words for an endpoint's health, written again here as the oracle. */
function shownHealth(e: Endpoint): string {
  if (e.state === 'open') {
    if (e.openUntil === null || e.openUntil <= Date.now()) return 'down, retrying now';
    const at = new Date(e.openUntil);
    return `down, retrying at ${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
  }
  return e.state === 'down' ? `failing (${e.consecutiveFailures} in a row)` : 'up';
}

interface ApiView {
  stats: Stats & { totals: { notFoundCached: number; quotaBytes: number; errors: number } };
  upstreams: { upstreams: { registry: string; endpoints: Endpoint[] }[] };
  images: { images: { upstream: string; repo: string; tag: string; bytes: number; hits: number }[] };
  jobs: { runs: { id: number; job: string; status: string; blobsFetched: number; blobsSkipped: number; bytes: number }[] };
}

async function apiView(): Promise<ApiView> {
  const read = async (path: string): Promise<unknown> => JSON.parse((await get(`${mirror.url}/api/${path}`)).body.toString());
  return { stats: (await read('stats')) as ApiView['stats'], upstreams: (await read('upstreams')) as ApiView['upstreams'], images: (await read('images')) as ApiView['images'], jobs: (await read('jobs')) as ApiView['jobs'] };
}

/** Every figure the page should show for what the API says. */
function expectedFigures(api: ApiView): Record<string, unknown> {
  const t = api.stats.totals;
  return {
    hitRatio: `${(t.hitRatio * 100).toFixed(1)}%`,
    hitDetail: `${t.hits} hits · ${t.coalesced} coalesced · ${t.stale} stale · ${t.misses} misses`,
    requests: String(t.hits + t.misses + t.coalesced + t.stale + t.errors),
    requestDetail: `${t.errors} errors (5xx) · ${t.notFoundCached} answered from the 404 cache`,
    bytesSaved: shownBytes(t.bytesFromCache),
    bytesDetail: `served from cache · ${shownBytes(t.bytesFromUpstream)} fetched upstream`,
    cacheSize: shownBytes(t.cacheBytes),
    cacheDetail: `${t.blobs} blobs · ${t.quotaBytes > 0 ? `quota ${shownBytes(t.quotaBytes)}` : 'no quota'}`,
    upstreams: api.upstreams.upstreams.flatMap((u) => u.endpoints.map((e) => [u.registry, e.url, shownHealth(e), e.latencyMs === null ? '–' : `${e.latencyMs} ms`, e.rateLimit ? `${e.rateLimit.remaining} / ${e.rateLimit.limit}` : 'no rate-limit headers seen', String(e.manifestGets)])),
    images: api.images.images.slice(0, 15).map((i) => [`${i.upstream}/${i.repo}:${i.tag}`, shownBytes(i.bytes), String(i.hits)]),
    runs: api.jobs.runs.slice(0, 10).map((r) => [String(r.id), r.job, r.status, `${r.blobsFetched} · ${shownBytes(r.bytes)}`, String(r.blobsSkipped)]),
  };
}

/** Every figure the page shows, read off the DOM. */
async function shownFigures(page: Page): Promise<Record<string, unknown>> {
  const text = async (id: string): Promise<string> => (await page.textContent(`#${id}`)) ?? '';
  return {
    hitRatio: await text('hit-ratio'),
    hitDetail: await text('hit-detail'),
    requests: await text('requests'),
    requestDetail: await text('request-detail'),
    bytesSaved: await text('bytes-saved'),
    bytesDetail: await text('bytes-detail'),
    cacheSize: await text('cache-size'),
    cacheDetail: await text('cache-detail'),
    // No named helpers inside: the function is sent to the browser as source (esbuild would add __name calls).
    upstreams: await page.$$eval('#upstreams tr', (rows) =>
      rows.map((row) => [
        row.children[0]!.querySelector('strong')?.textContent,
        row.children[0]!.querySelector('.endpoint')?.textContent,
        row.children[1]!.textContent,
        row.children[2]!.textContent,
        row.children[3]!.querySelector('[data-testid="ratelimit-remaining"]')?.textContent ?? row.children[3]!.textContent,
        row.children[4]!.textContent,
      ]),
    ),
    images: await page.$$eval('#images tr', (rows) => rows.map((row) => [row.children[0]!.textContent, row.children[1]!.textContent, row.children[3]!.textContent])),
    runs: await page.$$eval('#runs tr', (rows) => rows.map((row) => [row.children[0]!.textContent, row.children[1]!.textContent, row.children[3]!.querySelector('.badge')?.textContent, row.children[4]!.textContent, row.children[5]!.textContent])),
  };
}

/** Reloads the page and waits for it to render a fresh answer of the API. */
async function freshPage(page: Page): Promise<void> {
  await page.reload();
  await page.waitForFunction(() => document.querySelector('[data-testid="status"]')?.textContent?.startsWith('updated') === true, undefined, { timeout: 15_000 });
}

browserTools.test('the dashboard in a real browser shows every figure the API gives, and runs a warm-up', async () => {
  let browser: Browser | undefined;
  try {
    browser = await chromium.launch({
      executablePath: chromiumPath!,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await page.goto(`${mirror.url}/`);
    // The restarted mirror learns the budget from its next manifest GET.
    await get(`${mirror.url}/v2/team/web/manifests/${image.manifestDigest}`, { accept: ALL });
    await get(`${mirror.url}/v2/team/other/manifests/v1`, { accept: ALL });
    await freshPage(page);
    const api = await apiView();
    assert.ok(api.upstreams.upstreams[0]!.endpoints[0]!.rateLimit, 'the upstream reported its budget');
    assert.ok(api.images.images.length > 0, 'there are cached images to list');
    assert.deepEqual(await shownFigures(page), expectedFigures(api));

    await page.click('[data-testid="run-warmup-web"]');
    await page.waitForSelector('[data-testid="job-runs"] tr[data-job="web"]', { timeout: 15_000 });
    await mirror.stevedore.warmups.idle();
    const runs = mirror.stevedore.jobs.list(5);
    assert.ok(runs.some((r) => r.job === 'web' && r.trigger === 'api'), 'the click started a run');
    await freshPage(page);
    assert.deepEqual(await shownFigures(page), expectedFigures(await apiView()), 'after the warm-up too');
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, 'dashboard.png'), fullPage: true });
  } finally {
    await browser?.close();
  }
});

browserTools.test('an upstream that is down: errors counted and charted, "down, retrying at HH:MM", why a warm-up failed, and the instance line', async () => {
  const dead = await startHubDouble({ upstream: registry.url });
  let down: TestMirror | undefined;
  let browser: Browser | undefined;
  try {
    await dead.down('refuse');
    down = await startMirror({
      upstreams: [{ registry: 'docker.io', url: dead.url }],
      health: { failureThreshold: 3, openMin: '1h' },
      warmup: [{ name: 'broken', schedule: '0 0 1 1 *', images: ['team/missing:v1'] }],
      instanceId: 'dash-down-1',
    });
    for (let i = 0; i < 5; i++) assert.equal((await get(`${down.url}/v2/team/web/manifests/v${i}`, { accept: ALL })).status, 503, `pull ${i}`);
    const run = await down.stevedore.warmups.start({ name: 'broken', images: ['team/missing:v1'], platforms: 'all', pin: false, concurrency: 1, trigger: 'api' }).done;
    assert.equal(run.status, 'failed');

    const read = async (path: string): Promise<unknown> => JSON.parse((await get(`${down!.url}/api/${path}`)).body.toString());
    const stats = (await read('stats')) as { totals: { errors: number }; errorSeries: { errors: number }[]; instance: { id: string; version: string; diskFreeBytes: number | null } };
    assert.equal(stats.totals.errors, 5);
    assert.equal(stats.errorSeries.reduce((sum, p) => sum + p.errors, 0), 5);
    assert.equal(stats.instance.id, 'dash-down-1');
    const version = (JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string }).version;
    assert.equal(stats.instance.version, version);
    assert.ok(stats.instance.diskFreeBytes !== null && stats.instance.diskFreeBytes > 0);
    const endpoint = ((await read('upstreams')) as ApiView['upstreams']).upstreams[0]!.endpoints[0]!;
    assert.equal(endpoint.state, 'open');

    browser = await chromium.launch({
      executablePath: chromiumPath!,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await page.goto(`${down.url}/`);
    await freshPage(page);
    assert.equal(await page.textContent('#requests'), '5', 'five 503s are five requests, not 0');
    assert.match((await page.textContent('#request-detail')) ?? '', /^5 errors \(5xx\) · /);
    const health = (await page.textContent('[data-testid="health"]')) ?? '';
    assert.match(health, /^down, retrying at \d\d:\d\d$/);
    assert.equal(health, shownHealth(endpoint));
    assert.ok(await page.$('#upstreams tr.endpoint-open'), 'the row of the down endpoint stands out');
    assert.equal(await page.isHidden('[data-testid="notifications-panel"]'), true, 'no notification endpoints: no notifications panel');
    assert.match((await page.textContent('#chart')) ?? '', /errors \(5xx\)/, 'the chart has an errors series');
    const why = (await page.textContent('#runs tr[data-job="broken"] [data-testid="run-error"]')) ?? '';
    assert.match(why, /team\/missing:v1/, 'the failed run says why');
    assert.match((await page.textContent('#jobs')) ?? '', /team\/missing:v1/, 'so does the job');
    const instance = (await page.textContent('#instance')) ?? '';
    assert.match(instance, new RegExp(`^dash-down-1 · v${version.replace(/\./g, '\\.')} · up \\d+s · [\\d.]+ [KMGT]?i?B free of [\\d.]+ [KMGT]?i?B$`));
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, 'dashboard-down.png'), fullPage: true });
  } finally {
    await browser?.close();
    await down?.stop();
    await dead.stop();
  }
});


/** The dashboard's words for a notification endpoint's state, written again here as the oracle. */
function shownDelivery(e: EndpointStatus): string {
  if (e.state === 'sending') return 'delivering';
  if (e.state === 'retrying') {
    if (e.nextAttemptAt === undefined || e.nextAttemptAt <= Date.now()) return 'retrying now';
    const at = new Date(e.nextAttemptAt);
    return `retrying at ${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
  }
  return e.state;
}

browserTools.test('notification endpoints: a dead receiver shows as retrying with its events pending, a disabled one as disabled, in the API, the metrics and the page', async () => {
  const closedPort = await freePort(); // nothing listens there: every delivery is refused
  const otherPort = await freePort();
  let notifying: TestMirror | undefined;
  let browser: Browser | undefined;
  try {
    notifying = await startMirror({
      upstreams: [{ registry: 'docker.io', url: hub.url, username: 'dash', password: PASSWORD }],
      extra: {
        notifications: {
          endpoints: [
            // A long backoff keeps the next attempt in the future while the page is read.
            { name: 'ci', url: `http://127.0.0.1:${closedPort}/events`, allow: ['127.0.0.1'], threshold: 1, backoff: '10m', maxBackoff: '1h', timeout: '2s' },
            { name: 'audit', url: `http://127.0.0.1:${otherPort}/hook`, allow: ['127.0.0.1'], disabled: true },
          ],
        },
      },
    });
    const m = notifying;
    assert.equal((await get(`${m.url}/v2/team/web/manifests/v1`, { accept: ALL })).status, 200);
    const read = async (): Promise<{ recorded: number; endpoints: EndpointStatus[] }> => JSON.parse((await get(`${m.url}/api/notifications`)).body.toString()) as { recorded: number; endpoints: EndpointStatus[] };
    const ci = async (): Promise<EndpointStatus | undefined> => (await read()).endpoints.find((e) => e.name === 'ci');
    await waitForAsync('the pull event to fail its first delivery', async () => {
      const e = await ci();
      return e?.state === 'retrying' && e.pending > 0 && e.failedAttempts > 0;
    }, 20_000);
    const status = await read();
    assert.ok(status.recorded >= 1, 'the pull was recorded');
    assert.deepEqual(status.endpoints.map((e) => e.name), ['ci', 'audit']);
    const dead = status.endpoints[0]!;
    assert.equal(dead.url, `http://127.0.0.1:${closedPort}/…`, 'the path (it may hold a token) is not shown');
    assert.equal(dead.delivered, 0);
    assert.equal(dead.dropped, 0);
    assert.equal(dead.lastSuccessAt, undefined);
    assert.ok(dead.lastFailure && dead.lastFailure.message.length > 0, 'the failure says why');
    assert.ok(dead.nextAttemptAt !== undefined && dead.nextAttemptAt > Date.now(), 'the next attempt is due later');
    const off = status.endpoints[1]!;
    assert.equal(off.state, 'disabled');
    assert.equal(off.delivered, 0);

    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.ok(metricValue(metrics, 'stevedore_notifications_pending', 'endpoint="ci"') > 0, 'pending gauge');
    assert.ok(metricValue(metrics, 'stevedore_notifications_failed_total', 'endpoint="ci"') > 0, 'failed attempts counter');
    assert.match(metrics, /^stevedore_notifications_recorded_total [1-9]\d*$/m);
    assert.doesNotMatch(metrics, /^stevedore_notifications_last_success_timestamp_seconds\{endpoint="ci"\}/m, 'no success yet: no series');

    browser = await chromium.launch({
      executablePath: chromiumPath!,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await page.goto(`${m.url}/`);
    await freshPage(page);
    assert.equal(await page.isVisible('[data-testid="notifications-panel"]'), true);
    const shown = await page.$$eval('#notifications tr', (rows) =>
      rows.map((row) => [
        row.children[0]!.querySelector('strong')?.textContent,
        row.children[0]!.querySelector('.endpoint')?.textContent,
        row.children[1]!.textContent,
        row.children[2]!.textContent,
        row.children[3]!.textContent,
        row.children[4]!.textContent,
        row.children[5]!.textContent,
        row.children[6]!.textContent,
        // The message, without the "(12s ago)" that moves on while the test reads it.
        row.children[0]!.querySelector('[data-testid="notify-error"]')?.textContent?.replace(/ \(\d+[smhd] ago\)$/, '') ?? null,
      ]),
    );
    const api = await read();
    assert.deepEqual(shown, api.endpoints.map((e) => [e.name, e.url, shownDelivery(e), String(e.pending), String(e.delivered), String(e.failedAttempts), String(e.dropped), 'never', e.lastFailure?.message ?? null]));
    assert.match((await page.textContent('#notifications tr[data-endpoint="ci"] [data-testid="notify-error"]')) ?? '', / \(\d+s ago\)$/, 'when it failed');
    assert.match(shown[0]![2]!, /^retrying at \d\d:\d\d$/);
    assert.ok(Number(shown[0]![3]) > 0, 'the page shows the pending events');
    assert.equal(shown[1]![2], 'disabled');
    assert.ok(await page.$('#notifications tr.notify-retrying'), 'the row of the dead receiver stands out');
    assert.match((await page.textContent('#notifications-recorded')) ?? '', /^[1-9]\d* events recorded since start$/);
    mkdirSync(outputDir, { recursive: true });
    await page.screenshot({ path: join(outputDir, 'dashboard-notifications.png'), fullPage: true });
  } finally {
    await browser?.close();
    await notifying?.stop();
  }
});

