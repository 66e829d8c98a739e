// The values /metrics reports for circuits, warm-ups and eviction, checked
// against what happened; and every series the shipped Grafana dashboard
// queries exists, so the dashboard never shows "no data" for a renamed metric.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startHubDouble, type HubDouble } from '../support/hub-double.js';
import { pushBlob, pushImage, type PushedImage } from '../support/seed.js';
import { startMirror, type TestMirror } from '../support/stevedore.js';
import { get, streamDigest } from '../support/http.js';

let registry: RegistryHandle;
let hub: HubDouble;
let image: PushedImage;
const mirrors: TestMirror[] = [];

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry.url, 'team/app', 'v1', { format: 'oci', layers: [50_000] });
  hub = await startHubDouble({ upstream: registry.url });
});

after(async () => {
  for (const m of mirrors) await m.stop();
  await hub?.stop();
  await registry?.stop();
});

async function mirrorWith(options: Parameters<typeof startMirror>[0]): Promise<TestMirror> {
  const m = await startMirror(options);
  mirrors.push(m);
  return m;
}

/** The value of one series, or undefined when it is not exposed. */
async function metric(m: TestMirror, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const text = (await get(`${m.url}/metrics`)).body.toString();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = (match[2] ?? '').split(/,(?=[a-z_]+=")/).filter(Boolean);
    if (wanted.every((w) => present.includes(w)) && present.length === wanted.length) return Number(match[3]);
  }
  return undefined;
}

test('circuit state: 2 while an endpoint is open, 0 once a probe sees it back; the healthy one stays 0', async () => {
  const flaky = await startHubDouble({ upstream: registry.url });
  try {
    const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: [flaky.url, hub.url] }], health: { failureThreshold: 1, openMin: '1h' } });
    const state = (url: string): Promise<number | undefined> => metric(m, 'stevedore_upstream_circuit_state', { upstream: 'docker.io', endpoint: url });
    await m.stevedore.probes.runOnce();
    assert.deepEqual([await state(flaky.url), await state(hub.url)], [0, 0]);
    await flaky.down('refuse');
    await m.stevedore.probes.runOnce();
    assert.deepEqual([await state(flaky.url), await state(hub.url)], [2, 0]);
    await flaky.up();
    await m.stevedore.probes.runOnce();
    assert.deepEqual([await state(flaky.url), await state(hub.url)], [0, 0]);
  } finally {
    await flaky.stop();
  }
});

test('warm-up metrics: the last run of each job, when it finished, how long it took and whether it succeeded', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  const good = await m.stevedore.warmups.start({ name: 'good', images: ['team/app:v1'], platforms: 'all', pin: false, concurrency: 2, trigger: 'api' }).done;
  const bad = await m.stevedore.warmups.start({ name: 'bad', images: ['team/missing:v1'], platforms: 'all', pin: false, concurrency: 2, trigger: 'api' }).done;
  assert.equal(good.status, 'succeeded');
  assert.equal(bad.status, 'failed');
  for (const run of [good, bad]) {
    assert.equal(await metric(m, 'stevedore_warmup_last_success', { job: run.job }), run.status === 'succeeded' ? 1 : 0, run.job);
    assert.equal(await metric(m, 'stevedore_warmup_last_run_timestamp_seconds', { job: run.job }), run.finishedAt! / 1000, run.job);
    assert.equal(await metric(m, 'stevedore_warmup_last_duration_seconds', { job: run.job }), (run.finishedAt! - run.startedAt) / 1000, run.job);
  }
});

test('eviction metrics count what sweeps removed; size, blob and quota gauges follow the cache', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }], cache: { maxSize: '1MiB', lowWater: 0.5 } });
  assert.equal(await metric(m, 'stevedore_cache_quota_bytes'), 1024 * 1024);
  const blobs = await Promise.all(['e1', 'e2', 'e3'].map((seed) => pushBlob(registry.url, 'team/app', { size: 400 * 1024, seed })));
  for (const b of blobs) {
    assert.equal((await streamDigest(`${m.url}/v2/team/app/blobs/${b.digest}`)).digest, b.digest);
    await m.stevedore.mirror.fills.drain(10_000);
  }
  const report = await m.stevedore.sweeper.run();
  const removed = m.stevedore.sweeper.totals;
  assert.ok(removed.removedBlobs >= 1, 'the quota made a sweep evict');
  assert.ok(report.removed.length <= removed.removedBlobs);
  assert.equal(await metric(m, 'stevedore_cache_evicted_blobs_total'), removed.removedBlobs);
  assert.equal(await metric(m, 'stevedore_cache_evicted_bytes_total'), removed.removedBytes);
  // A second scrape counts nothing twice.
  assert.equal(await metric(m, 'stevedore_cache_evicted_blobs_total'), removed.removedBlobs);
  assert.equal(await metric(m, 'stevedore_cache_size_bytes'), m.stevedore.cache.bytes);
  assert.equal(await metric(m, 'stevedore_cache_blobs'), m.stevedore.cache.blobs);
  assert.ok(m.stevedore.cache.bytes <= 1024 * 1024);
});

test('every series the shipped Grafana dashboard queries exists on /metrics', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  // Traffic and a warm-up, so that labelled series exist too.
  for (let i = 0; i < 2; i++) assert.equal((await get(`${m.url}/v2/team/app/manifests/v1`, { accept: image.manifestMediaType })).status, 200); // a miss, then a hit
  await m.stevedore.warmups.start({ name: 'grafana', images: ['team/app:v1'], platforms: 'all', pin: false, concurrency: 1, trigger: 'api' }).done;
  const dashboard = readFileSync(fileURLToPath(new URL('../../docs/grafana-dashboard.json', import.meta.url)), 'utf8');
  const queried = new Set([...dashboard.matchAll(/"expr":\s*"((?:[^"\\]|\\.)*)"/g)].flatMap((e) => [...e[1]!.matchAll(/\b((?:stevedore|process|nodejs)_[a-z0-9_]+)/g)].map((n) => n[1]!)));
  assert.ok(queried.size >= 10, `the dashboard queries ${queried.size} series`);
  const text = (await get(`${m.url}/metrics`)).body.toString();
  // Sampled series, and counters declared but not counted yet (blobs not cached, say).
  const exposed = new Set(text.split('\n').map((line) => /^(?:# TYPE )?([a-z_:][a-z0-9_:]*)[{ ]/.exec(line)?.[1]).filter((n): n is string => n !== undefined));
  const missing = [...queried].filter((name) => !exposed.has(name));
  assert.deepEqual(missing, [], 'series the dashboard queries that /metrics does not expose');
});

test('upstream requests that get no response are counted by outcome; build info; no user name in any label', async () => {
  const user = 'metrics-robot-7f3a';
  const credentialed = await startHubDouble({ upstream: registry.url, credentials: { username: user, password: 'pw-metrics' } });
  const dead = await startHubDouble({ upstream: registry.url });
  try {
    await dead.down('refuse');
    const m = await mirrorWith({
      upstreams: [
        { registry: 'docker.io', url: [{ url: dead.url, username: user, password: 'pw-metrics' }, { url: credentialed.url, username: user, password: 'pw-metrics' }] },
      ],
      health: { failureThreshold: 100 },
    });
    assert.equal((await get(`${m.url}/v2/team/app/manifests/v1`, { accept: image.manifestMediaType })).status, 200, 'the second endpoint answers');
    const refused = await metric(m, 'stevedore_upstream_requests_total', { endpoint: dead.url, method: 'GET', status: 'none', outcome: 'refused' });
    assert.ok(refused !== undefined && refused >= 1, `refused requests counted: ${refused}`);
    const answered = await metric(m, 'stevedore_upstream_requests_total', { endpoint: credentialed.url, method: 'GET', status: '200', outcome: 'answered' });
    assert.ok(answered !== undefined && answered >= 1, `answered requests counted: ${answered}`);
    const text = (await get(`${m.url}/metrics`)).body.toString();
    assert.match(text, /^stevedore_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m);
    assert.match(text, /^# TYPE stevedore_upstream_requests_total counter$/m);
    assert.ok(!text.includes(user), 'the upstream user name appears on /metrics');
    const free = await metric(m, 'stevedore_cache_disk_free_bytes');
    const size = await metric(m, 'stevedore_cache_disk_size_bytes');
    assert.ok(free !== undefined && size !== undefined && free > 0 && free <= size, `disk gauges: ${free} of ${size}`);
  } finally {
    await dead.stop();
    await credentialed.stop();
  }
});

test('counters are counters: every stevedore_ series that counts since start is a counter named _total', async () => {
  const m = await mirrorWith({ upstreams: [{ registry: 'docker.io', url: hub.url }] });
  assert.equal((await get(`${m.url}/v2/team/app/manifests/v1`, { accept: image.manifestMediaType })).status, 200);
  const text = (await get(`${m.url}/metrics`)).body.toString();
  const types = new Map([...text.matchAll(/^# TYPE (stevedore_\S+) (\S+)$/gm)].map((t) => [t[1]!, t[2]!]));
  for (const [name, type] of types) {
    if (type === 'counter') assert.match(name, /_total$/, `${name} is a counter without _total`);
    if (name.endsWith('_total')) assert.equal(type, 'counter', `${name} is a ${type}`);
  }
  for (const name of ['stevedore_cache_evicted_blobs_total', 'stevedore_cache_evicted_bytes_total', 'stevedore_upstream_manifest_gets_total']) assert.equal(types.get(name), 'counter', name);
});
